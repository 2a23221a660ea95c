// What the host has, for `cove doctor` and for choosing a sandbox's network: qemu and its tools,
// virtiofsd, passt, the docker CLI's plugins.
import * as fs from 'node:fs';
import type { DoctorCheck } from '../../contract/protocol';
import { which } from '../image/tools';
import * as driver from '../driver';
import { envChoice } from './env-parse';

/** virtio-fs needs a virtiofsd, and the C virtiofsd needs root for its namespace sandbox. */
function virtiofsAvailable(): boolean {
  return driver.findVirtiofsd() !== null && process.getuid?.() === 0;
}

/**
 * The guest's network: passt where it is installed (`COVE_NETWORK=auto`, or unset); `user` forces
 * qemu's slirp; `passt` insists on passt, and a sandbox then fails to start without it, naming the
 * package.
 */
export function networkFor(env: NodeJS.ProcessEnv = process.env): 'passt' | 'user' {
  const set = envChoice(env, 'COVE_NETWORK', ['auto', 'passt', 'user'] as const);
  if (set === 'user' || set === 'passt') return set;
  return driver.findPasst(env) ? 'passt' : 'user';
}

export async function hostChecks(home: string): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const tool = (name: string, find: () => string | null, hint: string, optional = '') => {
    let found: string | null = null;
    let problem = 'not found';
    try {
      found = find();
    } catch (e) {
      problem = e instanceof Error ? e.message : String(e);
    }
    checks.push({ name, ok: found !== null, detail: found ?? problem + optional, hint });
  };
  tool('qemu', () => driver.findQemu(), 'apt-get install qemu-system-x86');
  tool('qemu-img', () => driver.findQemuImg(), 'apt-get install qemu-utils');
  tool('virtiofsd', () => driver.findVirtiofsd(), 'apt-get install qemu-system-common (QEMU 7.2) or virtiofsd', '; 9p is used for the shared folder');
  const passt = driver.findPasst();
  checks.push({
    name: 'passt',
    ok: passt !== null,
    detail: passt ? `${passt}: the guest cannot reach services on the host's 127.0.0.1` : "not found: qemu's user networking is used, and the guest can reach services on the host's 127.0.0.1",
    hint: 'apt-get install passt',
  });
  checks.push({
    name: 'virtio-fs usable',
    ok: virtiofsAvailable(),
    detail: virtiofsAvailable() ? 'yes' : 'no: the C virtiofsd needs root here; shared folders use 9p',
    hint: 'run coved as root or install the Rust virtiofsd, or use --mount-type 9p',
  });
  try {
    fs.accessSync(home, fs.constants.W_OK);
    checks.push({ name: 'COVE_HOME', ok: true, detail: home });
  } catch {
    checks.push({ name: 'COVE_HOME', ok: false, detail: `${home} is not writable`, hint: 'point COVE_HOME at a writable folder' });
  }
  const ssh = which('ssh');
  checks.push({
    name: 'ssh client',
    ok: ssh !== null,
    detail: ssh ?? 'not found (only needed to use OpenSSH with `cove ssh-config`)',
    hint: 'apt-get install openssh-client',
  });
  return checks;
}
