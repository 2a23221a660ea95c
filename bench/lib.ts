// What every bench group shares: the bench's own $COVE_HOME (images, build cache and locks shared
// with the tests' home when it exists), the real `cove` and docker CLIs with deadlines, timing in
// the guest, statistics, and the rows the table is made of.
import * as fs from 'node:fs';
import { waitUntil as waitUntilEvery } from '../test/helpers/wait';
import * as os from 'node:os';
import * as path from 'node:path';
import { run, type RunResult } from '../test/helpers/harness';
import { VM } from '../contract/layout';
import { tcgCacheMiB } from '../vmm-host/driver/tcg-cache';
import { toolVersion } from '../vmm-host/driver/qemu-features';
import { findQemu } from '../vmm-host/driver/tools';
import { qmpCommand } from '../vmm-host/driver';

/** The first line of `--version` of the qemu coved runs (COVE_QEMU, else the PATH's). */
export function qemuVersionLine(): string {
  try {
    return toolVersion(findQemu(process.env));
  } catch {
    return 'qemu unknown';
  }
}

/** What the bench's sandboxes run with as their TCG translation cache, for a row's note. */
export function tcgCacheText(): string {
  const set = process.env.COVE_TCG_TB_MIB?.trim();
  let size: number | null;
  try {
    size = tcgCacheMiB(process.env, qemuVersionLine());
  } catch {
    return `COVE_TCG_TB_MIB=${set} (refused)`;
  }
  const what = size === null ? "QEMU's own size" : `${size} MiB`;
  return set ? `COVE_TCG_TB_MIB=${set}: ${what}` : `${what} (this QEMU's default)`;
}

export const REPO = path.resolve(__dirname, '..', '..');
export const BENCH_ROOT = path.join(REPO, '.cove-bench');
export const HOME = process.env.COVE_BENCH_HOME ? path.resolve(process.env.COVE_BENCH_HOME) : path.join(BENCH_ROOT, 'home');
export const DOCKER_CONFIG = path.join(BENCH_ROOT, 'docker');
export const COVE_BIN = path.join(REPO, 'bin', 'cove');
export const RESULTS = path.join(REPO, 'bench', 'results');
/** Guest-side helpers (plain JS / shell), copied into each workspace so the guest can run them. */
export const GUEST_FILES = path.join(REPO, 'bench', 'guest');

export function benchEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, COVE_HOME: HOME, DOCKER_CONFIG, ...extra };
}

export function log(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

export function sh(cmd: string, args: string[], timeoutMs: number, input?: string | Buffer, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return run(cmd, args, { timeoutMs, input, env: benchEnv(env) });
}

export function cove(args: string[], timeoutMs = 120_000, input?: string | Buffer, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return sh(process.execPath, [COVE_BIN, ...args], timeoutMs, input, env);
}

export function docker(name: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return sh('docker', ['--context', `cove-${name}`, ...args], timeoutMs);
}

export function ok(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`);
  return r;
}

/** bench/ polls more often than the tests: its waits are part of what it times. */
export const waitUntil = <T>(what: string, timeoutMs: number, probe: Parameters<typeof waitUntilEvery<T>>[2], intervalMs = 250) =>
  waitUntilEvery<T>(what, timeoutMs, probe, intervalMs);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;


/** Times a host command (wall clock, ms); throws unless it exits 0. */
export async function timeHost(what: string, cmd: string, args: string[], timeoutMs: number): Promise<number> {
  const t0 = nowMs();
  ok(await sh(cmd, args, timeoutMs), what);
  return nowMs() - t0;
}

/**
 * Runs a shell snippet in the guest over `cove exec` and returns the `key value` lines it prints.
 * Figures that are timed in the guest use `date +%s%N` around the command inside the snippet, so
 * the SSH round trip is not part of them.
 */
export async function guestSh(name: string, script: string, timeoutMs: number, what: string): Promise<Record<string, number>> {
  const r = ok(await cove(['exec', name, '--', 'bash', '-c', script], timeoutMs), `${what} (in the guest)`);
  const out: Record<string, number> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^([\w.-]+)\s+(-?[\d.]+)$/.exec(line.trim());
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** A bash snippet that times CMD in the guest and prints `KEY <microseconds>`; exits 1 if CMD fails. */
export function timed(key: string, cmd: string): string {
  return `_a=$(date +%s%N); ${cmd}; _rc=$?; _b=$(date +%s%N); [ $_rc -eq 0 ] || { echo "${key} failed: exit $_rc" >&2; exit 1; }; echo "${key} $(( (_b - _a) / 1000 ))"`;
}

export interface Stats {
  n: number;
  min: number;
  median: number;
  max: number;
  samples: number[];
}

export function stats(samples: number[]): Stats {
  if (samples.length === 0) throw new Error('no samples');
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { n: s.length, min: s[0], median, max: s[s.length - 1], samples };
}

export interface Goal {
  text: string;
  met: boolean;
}

export interface Row {
  id: string;
  what: string;
  unit: string;
  /** Which way is better, for reading the ratio. */
  better: 'lower' | 'higher';
  figure: Stats;
  baselineWhat: string;
  baseline: Stats | null;
  /** figure median / baseline median. */
  ratio: number | null;
  goal?: Goal;
  note?: string;
}

export type RowSpec = Omit<Row, 'ratio' | 'figure' | 'baseline' | 'goal'> & { figure: number[]; baseline: number[] | null; goal?: (row: Row) => Goal };

export function makeRow(spec: RowSpec): Row {
  const { goal, ...r } = spec;
  const figure = stats(r.figure);
  const baseline = r.baseline && r.baseline.length ? stats(r.baseline) : null;
  const row: Row = { ...r, figure, baseline, ratio: baseline && baseline.median !== 0 ? figure.median / baseline.median : null };
  if (goal) row.goal = goal(row);
  return row;
}

export interface MachineFacts {
  cores: number;
  cpuModel: string;
  memMiB: number;
  hostKernel: string;
  accel: string;
  accelReason: string;
  node: string;
  qemu: string;
  loadAvgAtStart: number[];
  vmCpus: number;
  vmMemoryMiB: number;
}

export function machineBase(): Omit<MachineFacts, 'accel' | 'accelReason' | 'qemu' | 'vmCpus' | 'vmMemoryMiB'> {
  return {
    cores: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memMiB: Math.round(os.totalmem() / 2 ** 20),
    hostKernel: os.release(),
    node: process.version,
    loadAvgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** The VM size every booted machine in a run uses (the bare limit too). */
export const VM_CPUS = Math.min(2, os.cpus().length);
export const VM_MEMORY_MIB = 2048;

export function readPid(file: string): number | null {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

export function alive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** pid and every descendant of it (from /proc/<pid>/stat ppid). */
export function processTree(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(e), ppid);
    } catch {
      /* gone */
    }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, pp] of parent) if (pp === out[i]) out.push(pid);
  return out.filter((p) => parent.has(p));
}

/** Proportional set size (KiB) of one process from smaps_rollup (VmRSS when that is unreadable), split into anonymous, file and shmem (guest RAM in a memfd). */
export function pssKiB(pid: number): { pss: number; rss: number; anon: number; file: number; shmem: number } {
  let rss: number;
  try {
    rss = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return { pss: 0, rss: 0, anon: 0, file: 0, shmem: 0 };
  }
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const f = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)?.[1] ?? 0);
    return { pss: f('Pss') || rss, rss, anon: f('Pss_Anon'), file: f('Pss_File'), shmem: f('Pss_Shmem') };
  } catch {
    return { pss: rss, rss, anon: 0, file: 0, shmem: 0 };
  }
}

export interface TreeMemory {
  pssMiB: number;
  rssMiB: number;
  anonMiB: number;
  fileMiB: number;
  shmemMiB: number;
  byProcess: Array<{ pid: number; comm: string; pssMiB: number }>;
}

export function treePss(pids: Array<number | null>): TreeMemory {
  const all = new Set<number>();
  for (const p of pids) if (p && alive(p)) for (const q of processTree(p)) all.add(q);
  const out: TreeMemory = { pssMiB: 0, rssMiB: 0, anonMiB: 0, fileMiB: 0, shmemMiB: 0, byProcess: [] };
  for (const p of all) {
    const m = pssKiB(p);
    out.pssMiB += m.pss / 1024;
    out.rssMiB += m.rss / 1024;
    out.anonMiB += m.anon / 1024;
    out.fileMiB += m.file / 1024;
    out.shmemMiB += m.shmem / 1024;
    let comm = '?';
    try {
      comm = fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim();
    } catch {
      /* gone */
    }
    out.byProcess.push({ pid: p, comm, pssMiB: m.pss / 1024 });
  }
  return out;
}

/** One qemu's memory by what it holds (MiB of PSS), read from /proc/<pid>/smaps. */
export interface QemuSplit {
  /** The guest RAM mapping: the pages the guest touched that are still resident. */
  guestRamMiB: number;
  /** Of it, anonymous: private copies (a clone's written pages, or plain anonymous RAM). */
  guestRamAnonMiB: number;
  /** Of it, file pages: a template's RAM file (shared by its clones) or a memfd. */
  guestRamFileMiB: number;
  /** TCG's translation cache: the large anonymous executable mapping (none under KVM). */
  tcgCacheMiB: number;
  /** The image's kernel and initrd, which qemu keeps mapped (page cache, shared by every VM of the image). */
  kernelFilesMiB: number;
  /** Every file-backed page (the RAM file, kernel, libraries): page cache that VMs of one image share. */
  fileMiB: number;
  /** Everything else: qemu's own code, heap, device buffers, libraries. */
  otherMiB: number;
  totalMiB: number;
}

/** A VM's TCG translation cache as qemu's `info jit` (over QMP) reports it: bytes of translated code and flushes so far; NaN where it does not say. */
export async function infoJit(vmDir: string): Promise<{ genCodeBytes: number; flushes: number }> {
  const out = (await qmpCommand(path.join(vmDir, VM.qmpSock), 'human-monitor-command', { 'command-line': 'info jit' })) as string;
  return { genCodeBytes: Number(/gen code size\s+(\d+)/.exec(out)?.[1] ?? NaN), flushes: Number(/TB flush count\s+(\d+)/.exec(out)?.[1] ?? NaN) };
}

/**
 * Splits a qemu's PSS: the guest RAM mapping is the one of the guest's memory size (a file, a
 * memfd or anonymous), the TCG translation cache the largest anonymous executable mapping.
 */
export function qemuSplit(pid: number | null, memoryMiB: number): QemuSplit | null {
  if (!pid) return null;
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return null;
  }
  interface Vma { kib: number; perms: string; name: string; pss: number; pssAnon: number; shmem: boolean }
  const vmas: Vma[] = [];
  let cur: Vma | null = null;
  for (const line of text.split('\n')) {
    const h = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (h) {
      cur = { kib: (parseInt(h[2], 16) - parseInt(h[1], 16)) / 1024, perms: h[3], name: h[4], pss: 0, pssAnon: 0, shmem: h[4].startsWith('/memfd:') || h[3].endsWith('s') };
      vmas.push(cur);
      continue;
    }
    // Per mapping, smaps has no Pss_Anon; a qemu's anonymous pages are its own, so their RSS is their PSS.
    const f = /^(Pss|Anonymous):\s+(\d+) kB/.exec(line);
    if (f && cur) cur[f[1] === 'Pss' ? 'pss' : 'pssAnon'] = Number(f[2]);
  }
  const ramKiB = memoryMiB * 1024;
  const ram = vmas.filter((v) => v.kib >= ramKiB && v.kib <= ramKiB + 4096).sort((a, b) => b.pss - a.pss)[0];
  const tcg = vmas.filter((v) => v !== ram && v.name === '' && v.perms.includes('x')).sort((a, b) => b.kib - a.kib)[0];
  const total = vmas.reduce((s, v) => s + v.pss, 0) / 1024;
  const guestRamMiB = (ram?.pss ?? 0) / 1024;
  const guestRamAnonMiB = (ram?.pssAnon ?? 0) / 1024;
  const tcgCacheMiB = (tcg?.pss ?? 0) / 1024;
  const kernelFilesMiB = vmas.filter((v) => /\/(vmlinux|initrd\.img)$/.test(v.name)).reduce((s, v) => s + v.pss, 0) / 1024;
  const fileMiB = vmas.filter((v) => v.name.startsWith('/') && !v.shmem).reduce((s, v) => s + v.pss - v.pssAnon, 0) / 1024;
  return {
    guestRamMiB,
    guestRamAnonMiB,
    guestRamFileMiB: guestRamMiB - guestRamAnonMiB,
    tcgCacheMiB,
    kernelFilesMiB,
    fileMiB,
    otherMiB: total - guestRamMiB - tcgCacheMiB - kernelFilesMiB,
    totalMiB: total,
  };
}

/** A split as one line for a row's note. */
export function splitText(s: QemuSplit | null): string {
  if (!s) return 'qemu ?';
  const f = (x: number) => x.toFixed(0);
  return `guest RAM ${f(s.guestRamMiB)} (anon ${f(s.guestRamAnonMiB)}, file/memfd ${f(s.guestRamFileMiB)}), TCG cache ${f(s.tcgCacheMiB)}, kernel+initrd files ${f(s.kernelFilesMiB)}, qemu itself ${f(s.otherMiB)}`;
}

/** One sandbox's host memory, by part (MiB of PSS), as the memory rows report it. */
export interface SandboxMemory {
  qemu: QemuSplit | null;
  passtMiB: number;
  virtiofsdMiB: number;
  /** coved's own PSS (not its children: those are the sandboxes' passt and virtiofsd) over the sandboxes it runs at that moment. */
  covedShareMiB: number;
  /** qemu + passt + virtiofsd (their process trees) + coved's share. */
  totalMiB: number;
}

/** Host memory of the sandbox whose VM folder is VMDIR; coved's PSS is divided by SANDBOXES. */
export function sandboxMemory(vmDir: string, memoryMiB: number, covedPid: number | null, sandboxes: number): SandboxMemory {
  const qemuPid = readPid(path.join(vmDir, VM.qemuPid));
  const tree = (f: string) => treePss([readPid(path.join(vmDir, f))]).pssMiB;
  const qemuTree = treePss([qemuPid]).pssMiB;
  const passtMiB = tree(VM.passtPid);
  const virtiofsdMiB = tree(VM.virtiofsdPid);
  // coved's own process only: its children are every sandbox's passt and virtiofsd, each counted above with its sandbox.
  const covedShareMiB = covedPid && alive(covedPid) ? pssKiB(covedPid).pss / 1024 / Math.max(1, sandboxes) : 0;
  return { qemu: qemuSplit(qemuPid, memoryMiB), passtMiB, virtiofsdMiB, covedShareMiB, totalMiB: qemuTree + passtMiB + virtiofsdMiB + covedShareMiB };
}

/** A sandbox's parts as one line for a row's note. */
export function sandboxText(m: SandboxMemory): string {
  const f = (x: number) => x.toFixed(0);
  return `${splitText(m.qemu)}, passt ${f(m.passtMiB)}${m.virtiofsdMiB > 0 ? `, virtiofsd ${f(m.virtiofsdMiB)}` : ''}, coved share ${f(m.covedShareMiB)}`;
}

/** Every process (pid) that maps FILE, from /proc/<pid>/maps. */
export function mappersOf(file: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/maps`, 'utf8').includes(` ${file}\n`)) out.push(Number(e));
    } catch {
      /* gone, or not ours */
    }
  }
  return out;
}

/** The file a qemu maps as guest RAM (a template's RAM file for a clone), or null (anonymous or memfd). */
export function guestRamFile(qemuPid: number | null, memoryMiB: number): string | null {
  if (!qemuPid) return null;
  try {
    for (const line of fs.readFileSync(`/proc/${qemuPid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s+(\/.*)$/.exec(line);
      if (!m || m[3].startsWith('/memfd:')) continue;
      const kib = (parseInt(m[2], 16) - parseInt(m[1], 16)) / 1024;
      if (kib >= memoryMiB * 1024 && kib <= memoryMiB * 1024 + 4096) return m[3];
    }
  } catch {
    /* gone */
  }
  return null;
}

/** The bench home's sandboxes, as `cove ls --json` lists them. */
export async function listSandboxes(): Promise<Array<{ name: string; state: string; bootKind: string | null }>> {
  return JSON.parse(ok(await cove(['ls', '--json'], 60_000), 'cove ls').stdout) as Array<{ name: string; state: string; bootKind: string | null }>;
}

/** How many of LISTED are running. */
export function runningSandboxes(listed: Array<{ state: string }>): number {
  return listed.filter((s) => s.state === 'running').length;
}
