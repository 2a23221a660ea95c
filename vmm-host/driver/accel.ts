// Which accelerator to use: KVM only when it really boots our kernel (here /dev/kvm is PVM-based
// and a stock kernel hangs under it), else TCG. The probe boots the image's kernel and initramfs
// with `cove.probe` under KVM and waits (bounded) for the `cove: probe ok` console line. The answer
// is cached in $COVE_HOME/accel.json keyed by the kernel's sha256 and the host kernel release.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IMAGE, homeFile } from '../../contract/layout';
import type { Accel } from '../../contract/protocol';
import { machineArgs } from './qemu';
import { findQemu } from './tools';

export type { Accel };

export interface AccelResult {
  accel: Accel;
  /** Why: `COVE_ACCEL=tcg`, `no /dev/kvm`, `KVM probe booted in 1.2 s`, `KVM probe hung (20 s)`… */
  reason: string;
  /** How long the probe took, when one ran now or was cached. */
  probeSeconds: number | null;
  /** True when the answer came from accel.json. */
  cached: boolean;
  /** The host TSC frequency for `tsc_early_khz` under TCG (null when unknown). */
  tscKhz: number | null;
}

export const PROBE_MARKER = 'cove: probe ok';

/** The host TSC frequency in kHz: /sys tsc_freq_khz if present, else /proc/cpuinfo's `cpu MHz`. */
export function hostTscKhz(cpuinfo?: string): number | null {
  if (cpuinfo === undefined) {
    try {
      const k = Number.parseInt(fs.readFileSync('/sys/devices/system/cpu/cpu0/tsc_freq_khz', 'utf8').trim(), 10);
      if (k > 0) return k;
    } catch {
      // Not exposed by this kernel.
    }
    try {
      cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return null;
    }
  }
  const m = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo);
  if (!m) return null;
  const khz = Math.round(Number.parseFloat(m[1]) * 1000);
  return khz > 0 ? khz : null;
}

interface CacheFile {
  [key: string]: { kvm: boolean; reason: string; seconds: number; probedAt: string };
}

function kernelSha(imageDir: string): string {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(imageDir, IMAGE.manifest), 'utf8')) as { files?: Record<string, { sha256?: unknown } | undefined> } | null;
    const sha = m?.files?.[IMAGE.kernel]?.sha256;
    if (typeof sha === 'string') return sha;
  } catch {
    // No manifest: hash the kernel itself.
  }
  return createHash('sha256').update(fs.readFileSync(path.join(imageDir, IMAGE.kernel))).digest('hex');
}

export interface DetectAccelOptions {
  home: string;
  imageDir: string;
  env?: NodeJS.ProcessEnv;
  /** The probe's deadline; default 20 s. */
  timeoutMs?: number;
  /** Ignore accel.json. */
  reprobe?: boolean;
  log?: (line: string) => void;
}

export async function detectAccel(opts: DetectAccelOptions): Promise<AccelResult> {
  const env = opts.env ?? process.env;
  const tscKhz = hostTscKhz();
  const forced = env.COVE_ACCEL?.trim().toLowerCase();
  if (forced === 'tcg' || forced === 'kvm') {
    return { accel: forced, reason: `COVE_ACCEL=${forced}`, probeSeconds: null, cached: false, tscKhz };
  }
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: 'no usable /dev/kvm', probeSeconds: null, cached: false, tscKhz };
  }
  const key = `${kernelSha(opts.imageDir)}|${os.release()}`;
  const cacheFile = homeFile('accelCache', opts.home);
  let cache: CacheFile = {};
  try {
    cache = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as CacheFile;
  } catch {
    // First probe on this host.
  }
  const hit = cache[key] as CacheFile[string] | undefined;
  if (hit && !opts.reprobe) {
    return { accel: hit.kvm ? 'kvm' : 'tcg', reason: `${hit.reason} (cached ${hit.probedAt})`, probeSeconds: hit.seconds, cached: true, tscKhz };
  }
  opts.log?.('probing KVM with the guest kernel');
  const probe = await probeKvm(opts.imageDir, { timeoutMs: opts.timeoutMs ?? 20_000, env });
  cache[key] = { kvm: probe.ok, reason: probe.reason, seconds: probe.seconds, probedAt: new Date().toISOString() };
  fs.mkdirSync(path.dirname(cacheFile), { recursive: true });
  fs.writeFileSync(cacheFile, JSON.stringify(cache, null, 2) + '\n');
  return { accel: probe.ok ? 'kvm' : 'tcg', reason: probe.reason, probeSeconds: probe.seconds, cached: false, tscKhz };
}

export interface ProbeResult {
  ok: boolean;
  reason: string;
  seconds: number;
}

/** Boots the image under KVM until the probe marker (ok), qemu exits (not ok) or the deadline (not ok). */
export async function probeKvm(imageDir: string, opts: { timeoutMs: number; env?: NodeJS.ProcessEnv }): Promise<ProbeResult> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-kvm-probe-'));
  const consoleLog = path.join(work, 'console.log');
  const args = [
    ...machineArgs('kvm', 1, 256, null),
    '-kernel', path.join(imageDir, IMAGE.kernel), '-initrd', path.join(imageDir, IMAGE.initrd),
    '-append', 'console=ttyS0 reboot=k panic=-1 quiet cove.probe',
    '-chardev', `file,id=con,path=${consoleLog}`, '-serial', 'chardev:con',
  ];
  const start = Date.now();
  const child = spawn(findQemu(opts.env), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  // An object, not a boolean: the handlers set it while the loop below awaits.
  const proc = { exited: false };
  child.on('exit', () => (proc.exited = true));
  child.on('error', () => (proc.exited = true));
  try {
    for (;;) {
      const seconds = (Date.now() - start) / 1000;
      let text = '';
      try {
        text = fs.readFileSync(consoleLog, 'utf8');
      } catch {
        // Not created yet.
      }
      if (text.includes(PROBE_MARKER)) return { ok: true, reason: `KVM probe booted in ${seconds.toFixed(1)} s`, seconds };
      if (proc.exited) {
        return { ok: false, reason: `KVM probe: qemu exited before the marker: ${stderr.trim().split('\n').pop() ?? ''}`, seconds };
      }
      if (Date.now() - start > opts.timeoutMs) {
        return { ok: false, reason: `KVM probe did not reach "${PROBE_MARKER}" within ${opts.timeoutMs / 1000} s`, seconds };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    if (!proc.exited) child.kill('SIGKILL');
    await new Promise((r) => (proc.exited ? r(null) : child.once('exit', r)));
    fs.rmSync(work, { recursive: true, force: true });
  }
}
