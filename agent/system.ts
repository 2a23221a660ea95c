// The guest system calls the control ops need, done with the guest's own tools: node has no
// ioctl or clock_settime, and a second node process costs seconds under TCG, so one perl process,
// started once and kept (perl-base is Essential in Debian, so every image has it), reseeds the
// kernel RNG and steps the clock; mount, umount and sync are the util-linux and coreutils commands
// the init uses. Every command is looked up on `systemPath` (COVE_AGENT_SYSTEM_PATH), which tests
// point at stub scripts so that nothing on the test host changes.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The environment every system command runs with: only the PATH to look it up on, and a C locale. */
function systemEnv(systemPath: string): NodeJS.ProcessEnv {
  return { PATH: systemPath, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' };
}

/** Runs `command args…` with PATH=systemPath, feeding `stdin`; never rejects for a non-zero exit. */
export function runCommand(systemPath: string, command: string, args: string[], stdin?: Buffer, timeoutMs = 60_000): Promise<CommandResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    const child = spawn(command, args, { env: systemEnv(systemPath), stdio: 'pipe' });
    const timer = setTimeout(() => {
      stderr += `\n${command} did not finish within ${timeoutMs / 1000} s and was killed`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => undefined); // EPIPE when the command does not read its input.
    child.stdin.end(stdin ?? Buffer.alloc(0));
    let done = false;
    const finish = (code: number | null, extra = ''): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ code, stdout, stderr: (stderr + extra).trim(), ms: performance.now() - started });
    };
    child.on('error', (err) => finish(null, `cannot run ${command}: ${err.message} (looked on PATH=${systemPath})`));
    child.on('close', (code) => finish(code));
  });
}

/**
 * The perl program the SyscallHelper keeps running. It starts with the syscall numbers of
 * clock_settime and clock_gettime (they differ per architecture; node knows which one it runs on)
 * as its arguments, then reads one request a line on stdin, each a list of ops done in order:
 *   reseed DEV HEX      write the entropy (HEX: the bytes in hex) to DEV, credit it (RNDADDENTROPY)
 *                       and force the kernel CRNG to reseed now (RNDRESEEDCRNG) rather than at its
 *                       next interval;
 *   clock TARGET THEN   set the wall clock to TARGET ns + (CLOCK_MONOTONIC now - THEN ns), so the
 *                       time spent before this op is not lost;
 *   flush DEV           when DEV is a block device, drop its cached pages (BLKFLSBUF), so a read
 *                       sees the disk now attached and not what the template read at its boot.
 * It prints `<op> <ns>` as each op finishes, or `fail <op> <reason>` and skips the rest of the
 * line, then `end`, and waits for the next line; it exits when stdin closes. Only builtins are
 * used (not even POSIX, whose loading costs more than the rest): perl-base has them.
 */
export const SYSCALL_HELPER = String.raw`
use strict;
my ($nr_settime, $nr_gettime) = splice(@ARGV, 0, 2);
sub mono { my $ts = pack("l!l!", 0, 0); syscall($nr_gettime + 0, 1, $ts) == 0 or die "clock_gettime: $!\n"; my ($s, $ns) = unpack("l!l!", $ts); return $s * 1000000000 + $ns; }
$| = 1;
while (defined(my $line = <STDIN>)) {
  my @args = split(' ', $line);
  my $op = '';
  eval {
    while (@args) {
      $op = shift @args;
      my $t0 = mono();
      if ($op eq 'reseed') {
        my ($dev, $hex) = splice(@args, 0, 2);
        my $e = pack("H*", $hex // '');
        length($e) > 0 or die "no entropy bytes in the request\n";
        open(my $fh, '+<', $dev) or die "cannot open $dev: $!\n";
        -c $fh or die "$dev is not a character device\n";
        binmode $fh;
        syswrite($fh, $e) == length($e) or die "cannot write to $dev: $!\n";
        # struct rand_pool_info: int entropy_count (bits), int buf_size, then the bytes.
        ioctl($fh, 0x40085203, pack("i i a*", 8 * length($e), length($e), $e)) or die "RNDADDENTROPY on $dev: $!\n";
        ioctl($fh, 0x5207, 0) or die "RNDRESEEDCRNG on $dev: $!\n";
        close($fh);
      } elsif ($op eq 'clock') {
        my ($target, $then) = splice(@args, 0, 2);
        my $ns = $target + (mono() - $then);
        my ($sec, $nsec) = do { use integer; ($ns / 1000000000, $ns % 1000000000) };
        syscall($nr_settime + 0, 0, pack("l!l!", $sec, $nsec)) == 0 or die "clock_settime: $!\n";
      } elsif ($op eq 'flush') {
        my $dev = shift @args;
        if (-b $dev) {
          open(my $fh, '<', $dev) or die "cannot open $dev: $!\n";
          ioctl($fh, 0x1261, 0) or die "BLKFLSBUF on $dev: $!\n";
          close($fh);
        }
      } else {
        die "unknown op $op\n";
      }
      print "$op ", mono() - $t0, "\n";
    }
    1;
  } or do { my $why = "$@"; $why =~ s/\s+/ /g; $why =~ s/ $//; print "fail $op $why\n"; };
  print "end\n";
}
`;

export type SyscallOp = 'reseed' | 'clock' | 'flush';

export class SystemError extends Error {
  override name = 'SystemError';
  constructor(
    message: string,
    /** The op that failed. */
    readonly op: SyscallOp,
  ) {
    super(message);
  }
}

export interface SyscallRequest {
  /** The kernel RNG device and the bytes to feed it. */
  reseed?: { device: string; entropy: Buffer };
  /** The wall clock to set: epochMs as of `receivedAt`, a process.hrtime.bigint() (CLOCK_MONOTONIC) reading. */
  clock?: { epochMs: number; receivedAt: bigint };
  /** A block device whose cached pages to drop afterwards. */
  flush?: string;
}

/** clock_settime and clock_gettime, per node architecture (the guest is x86_64; arm64 for later). */
const CLOCK_SYSCALLS: Partial<Record<string, [number, number]>> = { x64: [227, 228], arm64: [112, 113] };

/** The helper's leading arguments: the clock syscall numbers of this architecture. */
export function syscallNumbers(arch: string = process.arch): string[] {
  const nr = CLOCK_SYSCALLS[arch];
  if (!nr) throw new SystemError(`the agent knows no clock syscall numbers for ${arch}; add them to CLOCK_SYSCALLS in agent/system.ts`, 'clock');
  return nr.map(String);
}

/** One request line for the helper, and the ops it asks for, in order. */
export function requestLine(req: SyscallRequest): { line: string; ops: SyscallOp[] } {
  const words: string[] = [];
  const ops: SyscallOp[] = [];
  const path = (p: string, op: SyscallOp): string => {
    if (!p || /\s/.test(p)) throw new SystemError(`the device path ${JSON.stringify(p)} is empty or has white space, which the helper's request line cannot carry`, op);
    return p;
  };
  if (req.reseed) {
    if (req.reseed.entropy.length === 0) throw new SystemError('no entropy bytes to reseed with', 'reseed');
    words.push('reseed', path(req.reseed.device, 'reseed'), req.reseed.entropy.toString('hex'));
    ops.push('reseed');
  }
  if (req.clock) {
    words.push('clock', String(BigInt(Math.round(req.clock.epochMs * 1000)) * 1000n), String(req.clock.receivedAt));
    ops.push('clock');
  }
  if (req.flush) {
    words.push('flush', path(req.flush, 'flush'));
    ops.push('flush');
  }
  return { line: `${words.join(' ')}\n`, ops };
}

const WHAT: Record<SyscallOp, string> = { reseed: 'cannot reseed the kernel RNG', clock: 'cannot step the clock', flush: 'cannot drop the config disk cache' };

/**
 * The reseed, the clock step and the cache drop, done by one perl process that the agent starts
 * once and keeps, parked on its stdin. A template's agent starts it before the template is saved,
 * so a clone restored from it finds it already running: a rebirth then costs no process start,
 * which under TCG was 0.5–3.5 s and ~7 MiB of translated code per clone (docs/memory.md). If perl
 * dies or hangs, the next request starts another. Requests run one at a time.
 */
export class SyscallHelper {
  private child: ChildProcessWithoutNullStreams | null = null;
  private pending = '';
  private stderrTail = '';
  private onLine: ((line: string) => void) | null = null;
  private onGone: ((why: string) => void) | null = null;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly systemPath: string,
    private readonly timeoutMs = 60_000,
  ) {}

  /** The running perl's pid, or null. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Starts perl now, so that it is already running when the first request comes. */
  start(): void {
    this.ensure();
  }

  /** Stops perl; a later request starts another. */
  stop(): void {
    this.child?.kill('SIGKILL');
    this.child = null;
  }

  /** Runs the ops of `req` in order; returns the ms of each. Throws a SystemError naming the op that failed. */
  run(req: SyscallRequest): Promise<Partial<Record<SyscallOp, number>>> {
    const result = this.tail.then(() => this.runNow(req));
    this.tail = result.catch(() => undefined);
    return result;
  }

  /**
   * One request. A perl that is gone before it answered any of it (killed while parked, its exit
   * not yet seen when the request was written) gets the request again, once, in a new perl: every
   * op can be done twice (entropy added twice, the clock stepped to the same time, a cache dropped
   * again).
   */
  private runNow(req: SyscallRequest, retried = false): Promise<Partial<Record<SyscallOp, number>>> {
    const { line, ops } = requestLine(req);
    const child = this.ensure();
    const started = performance.now();
    let answered = false;
    return new Promise<Partial<Record<SyscallOp, number>>>((resolve, reject) => {
      const reported: Partial<Record<SyscallOp, number>> = {};
      const nextOp = (): SyscallOp => ops.find((op) => reported[op] === undefined) ?? ops[ops.length - 1];
      const finish = (err: SystemError | null): void => {
        clearTimeout(timer);
        this.onLine = null;
        this.onGone = null;
        if (err) reject(err);
        else resolve(reported);
      };
      const timer = setTimeout(() => {
        finish(new SystemError(`${WHAT[nextOp()]}: perl did not answer within ${this.timeoutMs / 1000} s and was killed`, nextOp()));
        if (this.child === child) this.stop();
      }, this.timeoutMs);
      this.onGone = (why) => {
        if (answered || retried) {
          finish(new SystemError(`${WHAT[nextOp()]}: ${why}`, nextOp()));
          return;
        }
        clearTimeout(timer);
        this.onLine = null;
        this.onGone = null;
        this.runNow(req, true).then(resolve, reject);
      };
      let failed: SystemError | null = null;
      // A failure is answered at `end`, so that the next request never reads this one's `end`.
      this.onLine = (text) => {
        answered = true;
        const done = /^(reseed|clock|flush) (\d+)$/.exec(text);
        const fail = /^fail (\S*) ?(.*)$/.exec(text);
        if (done) reported[done[1] as SyscallOp] = round(Number(done[2]) / 1e6);
        else if (fail && !failed) {
          const op = ops.includes(fail[1] as SyscallOp) ? (fail[1] as SyscallOp) : nextOp();
          failed = new SystemError(`${WHAT[op]}: ${fail[2] || 'perl gave no reason'}`, op);
        } else if (text === 'end') {
          const missing = ops.find((op) => reported[op] === undefined);
          if (failed) finish(failed);
          else if (missing) finish(new SystemError(`${WHAT[missing]}: perl ended the request without doing it`, missing));
          else finish(null);
        }
      };
      child.stdin.write(line);
    }).then((ms) => {
      // The first op's time is counted from the request, as when it included starting perl.
      if (ops.length > 0) ms[ops[0]] = round(performance.now() - started - ops.slice(1).reduce((s, op) => s + (ms[op] ?? 0), 0));
      return ms;
    });
  }

  private ensure(): ChildProcessWithoutNullStreams {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    const child = spawn('perl', ['-e', SYSCALL_HELPER, '--', ...syscallNumbers()], { env: systemEnv(this.systemPath), stdio: 'pipe' });
    this.child = child;
    this.pending = '';
    this.stderrTail = '';
    const gone = (why: string): void => {
      if (this.child !== child) return; // One stopped on purpose; its request has its answer.
      this.child = null;
      this.onGone?.(why);
    };
    child.stdout.on('data', (d: Buffer) => {
      if (this.child !== child) return;
      this.pending += d.toString();
      let nl: number;
      while ((nl = this.pending.indexOf('\n')) >= 0) {
        const text = this.pending.slice(0, nl).trim();
        this.pending = this.pending.slice(nl + 1);
        this.onLine?.(text);
      }
    });
    child.stderr.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    child.stdin.on('error', () => undefined); // EPIPE when perl is gone; reported by its exit.
    child.on('error', (err) => gone(`cannot run perl: ${err.message} (looked on PATH=${this.systemPath})`));
    child.on('exit', (code, signal) => {
      const stderr = this.stderrTail.trim();
      gone(`perl exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr}` : ''}`);
    });
    return child;
  }
}

export function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
