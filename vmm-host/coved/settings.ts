// Every setting coved takes from its environment, checked together at its start: a value coved
// cannot read stops it there with one line per setting, naming the variable and what it takes,
// instead of being ignored (a deny list or a limit silently not in force) or failing a boot later.
// The readers themselves live beside what they configure; this is the list of them.
import { DriverError } from '../driver/errors';
import { guestAslrSetting } from '../driver/guest-aslr';
import { tcgCacheMiB } from '../driver/tcg-cache';
import { executable } from '../driver/tools';
import { consoleKeepBytes } from './console-bound';
import { idlePolicyFromEnv, timeoutsFromEnv } from './coved';
import { dataChannelEnabled } from './data-link';
import { SettingError, envChoice, envText } from './env-parse';
import { warmEnabled } from './handlers/sandbox';
import { networkFor } from './host-checks';
import { portPolicyFromEnv } from './ports';
import { uploadPortEnabled } from './stdin-port';

/** One setting's problem: the line coved prints, and what to do. */
export interface SettingProblem {
  key: string;
  message: string;
}

/** A program named by a variable: a path must be an executable file (a typo would else fall back to another binary silently). */
function programSetting(key: string, env: NodeJS.ProcessEnv, pathOnly: boolean): void {
  const text = envText(env, key);
  if (text === null) return;
  if (!text.includes('/')) {
    if (pathOnly) throw new SettingError(key, text, 'the path of an executable file');
    return;
  }
  if (!executable(text)) throw new SettingError(key, text, 'the path of an executable file, and this is not one');
}

function mirrorSetting(env: NodeJS.ProcessEnv): void {
  const text = envText(env, 'COVE_DEBIAN_MIRROR');
  if (text === null) return;
  let url: URL | null;
  try {
    url = new URL(text);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new SettingError('COVE_DEBIAN_MIRROR', text, 'the http(s) URL of a Debian mirror, such as http://deb.debian.org/debian');
}

/** Each variable with the reader that takes it (called for its error only). */
const CHECKS: ReadonlyArray<readonly [key: string, read: (env: NodeJS.ProcessEnv) => unknown]> = [
  ['COVE_ACCEL', (env) => envChoice(env, 'COVE_ACCEL', ['auto', 'kvm', 'tcg'] as const)],
  ['COVE_BOOT_TIMEOUT', timeoutsFromEnv],
  ['COVE_CONSOLE_MAX_BYTES', consoleKeepBytes],
  ['COVE_DATA_CHANNEL', dataChannelEnabled],
  ['COVE_DEBIAN_MIRROR', mirrorSetting],
  ['COVE_DOCKER', (env) => programSetting('COVE_DOCKER', env, false)],
  ['COVE_GUEST_ASLR', guestAslrSetting],
  ['COVE_MAX_AUTO_PORTS', portPolicyFromEnv],
  ['COVE_NETWORK', networkFor],
  ['COVE_NEVER_FORWARD', portPolicyFromEnv],
  ['COVE_PASST', (env) => programSetting('COVE_PASST', env, true)],
  ['COVE_PAUSE_AFTER', idlePolicyFromEnv],
  ['COVE_QEMU', (env) => programSetting('COVE_QEMU', env, true)],
  ['COVE_QUIET_CPU', idlePolicyFromEnv],
  ['COVE_SLEEP_AFTER', idlePolicyFromEnv],
  ['COVE_SOCKET_WAIT', timeoutsFromEnv],
  ['COVE_TCG_TB_MIB', (env) => tcgCacheMiB(env)],
  ['COVE_UPLOAD_PORT', uploadPortEnabled],
  ['COVE_VIRTIOFSD', (env) => programSetting('COVE_VIRTIOFSD', env, true)],
  ['COVE_WARM', warmEnabled],
];

/** The settings coved reads, in the order it checks them. */
export const SETTING_KEYS: readonly string[] = CHECKS.map(([key]) => key);

/**
 * What is wrong with coved's settings in `env`, one problem per variable; empty when all is well.
 * Each reader sees only its own variable of the list (a reader that takes several, the idle
 * policy's say, is called once per variable), so every bad one is named, not only the first.
 */
export function settingProblems(env: NodeJS.ProcessEnv = process.env): SettingProblem[] {
  const out: SettingProblem[] = [];
  for (const [key, read] of CHECKS) {
    const only = Object.fromEntries(Object.entries(env).filter(([k]) => k === key || !SETTING_KEYS.includes(k)));
    try {
      read(only);
    } catch (e) {
      if (e instanceof SettingError) out.push({ key, message: e.message });
      else if (e instanceof DriverError) out.push({ key, message: `${e.message}: ${e.hint}` });
      else out.push({ key, message: e instanceof Error ? e.message : String(e) });
    }
  }
  return out;
}
