// Runs the build's external commands: output goes to the build log, never to our stdout; a
// failure becomes a typed error (ENOSPC → DiskFullError, anything else → BuildStepError).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { BuildStepError, DiskFullError } from './errors';
import { freeBytes } from './space';

export interface RunOptions {
  step: string;
  /** Append the command and its output here. */
  logFile: string | null;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the command after this long; the error names the command and the deadline. */
  timeoutMs: number;
  /** Directory whose file system an ENOSPC refers to (for the error message). */
  spaceDir: string;
  /** Capture stdout and return it (otherwise it goes to the log). */
  capture?: boolean;
  input?: Buffer | string;
}

export interface RunResult {
  stdout: string;
  stderrTail: string;
}

const NO_SPACE = /No space left on device|ENOSPC|Could not allocate block|Disk quota exceeded/i;

export async function run(cmd: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const log = opts.logFile ? fs.openSync(opts.logFile, 'a') : null;
  const write = (s: string | Buffer) => {
    if (log !== null) fs.writeSync(log, typeof s === "string" ? Buffer.from(s) : s);
  };
  write(`\n$ ${[cmd, ...args].join(' ')}\n`);
  try {
    return await new Promise<RunResult>((resolve, reject) => {
      const child = spawn(cmd, args, {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let tail = '';
      const keepTail = (b: Buffer) => {
        tail = (tail + b.toString('utf8')).slice(-4000);
      };
      child.stdout?.on('data', (b: Buffer) => {
        if (opts.capture) out.push(b);
        else {
          write(b);
          keepTail(b);
        }
      });
      child.stderr?.on('data', (b: Buffer) => {
        write(b);
        keepTail(b);
      });
      if (opts.input !== undefined) child.stdin?.end(opts.input);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new BuildStepError(opts.step, `cannot run ${cmd}: ${e.message}`, opts.logFile, { cause: e }));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const stdout = Buffer.concat(out).toString('utf8');
        if (code === 0) return resolve({ stdout, stderrTail: tail });
        if (NO_SPACE.test(tail)) {
          return reject(new DiskFullError(opts.spaceDir, freeBytes(opts.spaceDir), 0));
        }
        const why = timedOut
          ? `${cmd} did not finish within ${Math.round(opts.timeoutMs / 1000)} s`
          : `${cmd} exited with ${code ?? signal}: ${lastLine(tail)}`;
        const err = new BuildStepError(opts.step, why, opts.logFile);
        (err as BuildStepError & { output: string }).output = tail;
        reject(err);
      });
    });
  } finally {
    if (log !== null) fs.closeSync(log);
  }
}

function lastLine(s: string): string {
  const lines = s.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.slice(-2).join(' | ') || '(no output)';
}

/** Wraps fs errors: ENOSPC becomes a DiskFullError naming the directory. */
export function rethrowNoSpace(e: unknown, dir: string): never {
  if ((e as NodeJS.ErrnoException | null)?.code === 'ENOSPC') throw new DiskFullError(dir, freeBytes(dir), 0, { cause: e });
  throw e;
}
