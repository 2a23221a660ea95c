// What integration tests share: an isolated $COVE_HOME and Docker config under .cove-test/, the
// real `cove` CLI and docker CLI run as child processes with deadlines, and clean-up of VMs.
import { processAlive } from '../../vmm-host/driver/proc';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VM } from '../../contract/layout';
export { waitUntil } from './wait';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const TEST_ROOT = path.join(REPO, '.cove-test');
/** Kept short: socket paths under it must stay under the unix limit. */
export const HOME = process.env.COVE_TEST_HOME ? path.resolve(process.env.COVE_TEST_HOME) : path.join(TEST_ROOT, 'home');
/** Beside HOME, so two test homes never share Docker contexts. */
export const DOCKER_CONFIG = `${HOME}-docker`;
/** Files a test makes for itself (image tarballs, keys), beside HOME likewise. */
export const SCRATCH = `${HOME}-scratch`;
fs.mkdirSync(SCRATCH, { recursive: true });
export const COVE_BIN = path.join(REPO, 'bin', 'cove');

export function testEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, COVE_HOME: HOME, DOCKER_CONFIG, ...extra };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; rejects only when the deadline passes (with what was awaited). */
export function run(cmd: string, args: string[], opts: { timeoutMs: number; input?: string | Buffer; env?: NodeJS.ProcessEnv; cwd?: string }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = child_process.spawn(cmd, args, { env: opts.env ?? testEnv(), cwd: opts.cwd ?? REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`\`${cmd} ${args.join(' ')}\` did not finish within ${opts.timeoutMs / 1000} s\nstdout: ${stdout.slice(-2000)}\nstderr: ${stderr.slice(-2000)}`));
    }, opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

export function cove(args: string[], timeoutMs = 120_000, input?: string): Promise<RunResult> {
  return run(process.execPath, [COVE_BIN, ...args], { timeoutMs, input });
}

export function docker(context: string, args: string[], timeoutMs = 120_000, input?: string): Promise<RunResult> {
  return run('docker', ['--context', context, ...args], { timeoutMs, input });
}

/** Throws with both output streams unless the command exited 0. */
export function ok(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}\nstdout: ${r.stdout.slice(-3000)}\nstderr: ${r.stderr.slice(-3000)}`);
  return r;
}


function readPid(file: string): number | null {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

export function covedPid(): number | null {
  return readPid(path.join(HOME, 'coved.pid'));
}

function kill(pid: number | null, sig: NodeJS.Signals = 'SIGKILL'): void {
  if (!pid) return;
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/** True when `pid` is alive and its command line names `mustContain` (so a reused pid is spared). */
function runningWith(pid: number | null, mustContain: string): boolean {
  if (!pid) return false;
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(mustContain);
  } catch {
    return false;
  }
}

/**
 * Leaves no coved, VM or sandbox from an earlier run: kills coved and every VM process recorded
 * under vms/ (qemu and its helpers virtiofsd and passt, each only while its command line still names
 * the VM's folder), and removes vms/ and the test Docker config. Built images are kept (they are
 * the cache).
 */
export function resetTestHome(): void {
  kill(covedPid());
  const vms = path.join(HOME, 'vms');
  if (fs.existsSync(vms)) {
    for (const name of fs.readdirSync(vms)) {
      const dir = path.join(vms, name);
      for (const f of [VM.qemuPid, VM.virtiofsdPid, VM.passtPid]) {
        const pid = readPid(path.join(dir, f));
        if (runningWith(pid, dir)) kill(pid);
      }
    }
  }
  fs.rmSync(vms, { recursive: true, force: true });
  fs.rmSync(path.join(HOME, 'coved.pid'), { force: true });
  fs.rmSync(path.join(HOME, 'coved.sock'), { force: true });
  fs.rmSync(DOCKER_CONFIG, { recursive: true, force: true });
  fs.mkdirSync(DOCKER_CONFIG, { recursive: true });
}

/** Makes a fresh workspace folder under .cove-test/ws/<name>. */
export function workspace(name: string): string {
  const dir = path.join(TEST_ROOT, 'ws', name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Every live process whose command line names a file in `dir`: a VM's qemu and its helpers
 * (virtiofsd, passt), found by their folder, as the driver finds them (a zombie counts as gone).
 * `dir/`, so that the VM folder `…/vms/wd` does not also match `…/vms/wd2`.
 */
export function processesOf(dir: string): number[] {
  const inside = `${path.resolve(dir)}/`;
  return fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((pid) => processAlive(pid, inside));
}

/** The last `n` lines of a text. */
const lastLines = (text: string, n: number) => text.trimEnd().split('\n').slice(-n).join('\n');

/**
 * What a failed VM test needs in its report, since CI keeps only the output: coved's log lines for
 * the sandbox, its console and init lines (`cove logs`), and, where the guest still answers, the
 * agent's and dockerd's logs and the process list. Each part has its own deadline and says when it
 * could not be read.
 */
export async function guestDiagnostics(name: string): Promise<string> {
  const parts: string[] = [];
  try {
    const lines = fs.readFileSync(path.join(HOME, 'coved.log'), 'utf8').split('\n').filter((l) => l.includes(`[${name}]`));
    parts.push(`coved.log, [${name}] lines:\n${lastLines(lines.join('\n'), 30)}`);
  } catch (e) {
    parts.push(`coved.log: ${(e as Error).message}`);
  }
  const step = async (what: string, args: string[], lines: number) => {
    try {
      const r = await cove(args, 60_000);
      parts.push(`${what} (exit ${r.code}):\n${lastLines(r.stdout + r.stderr, lines)}`);
    } catch (e) {
      parts.push(`${what}: ${(e as Error).message.split('\n')[0]}`);
    }
  };
  await step(`cove logs ${name}`, ['logs', name], 30);
  // Processes without the kernel's threads, memory, disk, then the services' own logs.
  const script = "ps -o pid,ppid,stat,args | grep -v ' \\[' ; free -m; df -h / /var/lib/docker; cd /var/log/cove && tail -n 15 cove-agent.log dockerd.log containerd.log";
  await step('in the guest', ['exec', name, '--', 'sh', '-c', script], 90);
  return parts.join('\n\n');
}

/** Runs a VM test's body; a failure carries guestDiagnostics(name) in its message. */
export async function withGuestDiagnostics<T>(name: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    const report = await guestDiagnostics(name);
    if (e instanceof Error) {
      e.message += `\n--- sandbox ${name} at the failure ---\n${report}`;
      throw e;
    }
    throw new Error(`${String(e)}\n--- sandbox ${name} at the failure ---\n${report}`, { cause: e });
  }
}
