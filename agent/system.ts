// The guest system calls the control ops need, done with the guest's own tools: node has no
// ioctl or clock_settime, and a second node process costs seconds under TCG, so one short perl
// run (perl-base is Essential in Debian, so every image has it) reseeds the kernel RNG and steps
// the clock; mount, umount, hostname and sync are the util-linux and coreutils commands the init
// uses. Every command is looked up on `systemPath` (COVE_AGENT_SYSTEM_PATH), which tests point
// at stub scripts so that nothing on the test host changes.
import { spawn } from 'node:child_process';

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `command args…` with PATH=systemPath, feeding `stdin`; never rejects for a non-zero exit. */
export function runCommand(systemPath: string, command: string, args: string[], stdin?: Buffer, timeoutMs = 60_000): Promise<CommandResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    const child = spawn(command, args, { env: { PATH: systemPath, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' }, stdio: 'pipe' });
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
 * The perl program run by `syscalls`. Its arguments are ops, done in order:
 *   reseed DEV          write the entropy (stdin) to DEV, credit it (RNDADDENTROPY) and force the
 *                       kernel CRNG to reseed now (RNDRESEEDCRNG) rather than at its next interval;
 *   clock TARGET THEN   set the wall clock to TARGET ns + (CLOCK_MONOTONIC now - THEN ns), so the
 *                       time spent before this op is not lost;
 *   flush DEV           when DEV is a block device, drop its cached pages (BLKFLSBUF), so a read
 *                       sees the disk now attached and not what the template read at its boot.
 * The first two arguments are the syscall numbers of clock_settime and clock_gettime (they differ
 * per architecture; node knows which one it runs on). It prints `<op> <ns>` as each op finishes,
 * or dies with the reason on stderr. Only builtins are used (not even POSIX, whose loading costs
 * more than the rest): perl-base has them.
 */
export const SYSCALL_HELPER = String.raw`
use strict;
my ($nr_settime, $nr_gettime) = splice(@ARGV, 0, 2);
sub mono { my $ts = pack("l!l!", 0, 0); syscall($nr_gettime + 0, 1, $ts) == 0 or die "clock_gettime: $!\n"; my ($s, $ns) = unpack("l!l!", $ts); return $s * 1000000000 + $ns; }
$| = 1;
while (@ARGV) {
  my $op = shift @ARGV;
  my $t0 = mono();
  if ($op eq 'reseed') {
    my $dev = shift @ARGV;
    binmode STDIN; my $e = ''; while (read(STDIN, my $chunk, 65536)) { $e .= $chunk; }
    length($e) > 0 or die "no entropy bytes on stdin\n";
    open(my $fh, '+<', $dev) or die "cannot open $dev: $!\n";
    -c $fh or die "$dev is not a character device\n";
    binmode $fh;
    syswrite($fh, $e) == length($e) or die "cannot write to $dev: $!\n";
    # struct rand_pool_info: int entropy_count (bits), int buf_size, then the bytes.
    ioctl($fh, 0x40085203, pack("i i a*", 8 * length($e), length($e), $e)) or die "RNDADDENTROPY on $dev: $!\n";
    ioctl($fh, 0x5207, 0) or die "RNDRESEEDCRNG on $dev: $!\n";
    close($fh);
  } elsif ($op eq 'clock') {
    my ($target, $then) = splice(@ARGV, 0, 2);
    my $ns = $target + (mono() - $then);
    my ($sec, $nsec) = do { use integer; ($ns / 1000000000, $ns % 1000000000) };
    syscall($nr_settime + 0, 0, pack("l!l!", $sec, $nsec)) == 0 or die "clock_settime: $!\n";
  } elsif ($op eq 'flush') {
    my $dev = shift @ARGV;
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
  reseed: { device: string; entropy: Buffer };
  /** The wall clock to set: epochMs as of `receivedAt`, a process.hrtime.bigint() (CLOCK_MONOTONIC) reading. */
  clock?: { epochMs: number; receivedAt: bigint };
  /** A block device whose cached pages to drop afterwards. */
  flush?: string;
}

/**
 * Reseeds, steps the clock and drops a disk's cache in one perl run. Returns the ms of each op;
 * `reseed` includes starting perl. Throws a SystemError naming the op that failed.
 */
/** clock_settime and clock_gettime, per node architecture (the guest is x86_64; arm64 for later). */
const CLOCK_SYSCALLS: Partial<Record<string, [number, number]>> = { x64: [227, 228], arm64: [112, 113] };

/** The helper's leading arguments: the clock syscall numbers of this architecture. */
export function syscallNumbers(arch: string = process.arch): string[] {
  const nr = CLOCK_SYSCALLS[arch];
  if (!nr) throw new SystemError(`the agent knows no clock syscall numbers for ${arch}; add them to CLOCK_SYSCALLS in agent/system.ts`, 'clock');
  return nr.map(String);
}

export async function syscalls(systemPath: string, req: SyscallRequest): Promise<Record<SyscallOp, number>> {
  const args = ['-e', SYSCALL_HELPER, '--', ...syscallNumbers(), 'reseed', req.reseed.device];
  const ops: SyscallOp[] = ['reseed'];
  if (req.clock) {
    args.push('clock', String(BigInt(Math.round(req.clock.epochMs * 1000)) * 1000n), String(req.clock.receivedAt));
    ops.push('clock');
  }
  if (req.flush) {
    args.push('flush', req.flush);
    ops.push('flush');
  }
  const r = await runCommand(systemPath, 'perl', args, req.reseed.entropy);
  const reported = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(reseed|clock|flush) (\d+)$/.exec(line.trim());
    if (m) reported.set(m[1], Number(m[2]) / 1e6);
  }
  const failed = ops.find((op) => !reported.has(op));
  if (r.code !== 0 || failed) {
    const op = failed ?? ops[ops.length - 1];
    const what = { reseed: 'cannot reseed the kernel RNG', clock: 'cannot step the clock', flush: 'cannot drop the config disk cache' }[op];
    throw new SystemError(`${what}: ${r.stderr || `perl exited ${r.code}`}`, op);
  }
  const clock = reported.get('clock') ?? 0;
  const flush = reported.get('flush') ?? 0;
  return { reseed: round(r.ms - clock - flush), clock: round(clock), flush: round(flush) };
}

export function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
