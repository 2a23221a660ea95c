// PTYs without native code. Node has no PTY API, and the guest has no python, so a PTY session
// runs under util-linux's script(1): `script -q -f -e -c <wrapper> /dev/null` opens a real pty
// pair, makes the slave the controlling terminal of the wrapper, and copies bytes between our pipes
// and the master. The wrapper applies the requested size with `stty rows R cols C` before it execs
// the shell or command, so the first prompt already sees the right size.
//
// A later window-change runs `stty -F /dev/pts/N rows R cols C` on the same pts (found through
// /proc/<wrapper pid>/fd/0). TIOCSWINSZ on a tty makes the kernel send SIGWINCH to its foreground
// process group, exactly as sshd's resize does, so no signal is sent by hand.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import { errorText, log } from './log';

export interface PtyRequest {
  term: string;
  cols: number;
  rows: number;
}

const WRAPPER =
  'stty rows "$COVE_PTY_ROWS" cols "$COVE_PTY_COLS" 2>/dev/null; ' +
  'export SHELL="$COVE_PTY_SHELL"; c="$COVE_PTY_CMD"; ' +
  'unset COVE_PTY_ROWS COVE_PTY_COLS COVE_PTY_SHELL COVE_PTY_CMD; ' +
  'if [ -n "$c" ]; then exec /bin/sh -c "$c"; else exec "$SHELL" -l; fi';

const SCRIPT = '/usr/bin/script';

/** Starts `command` (or a login shell when null) on a new pty. */
export function spawnPty(command: string | null, pty: PtyRequest, env: NodeJS.ProcessEnv, cwd: string, shell: string): ChildProcessWithoutNullStreams {
  return spawn(SCRIPT, ['-q', '-f', '-e', '-c', WRAPPER, '/dev/null'], {
    cwd,
    env: {
      ...env,
      TERM: pty.term || 'xterm-256color',
      // script(1) runs -c through $SHELL; the wrapper restores the user's shell.
      SHELL: '/bin/sh',
      COVE_PTY_SHELL: shell,
      COVE_PTY_CMD: command ?? '',
      COVE_PTY_ROWS: String(clampSize(pty.rows, 24)),
      COVE_PTY_COLS: String(clampSize(pty.cols, 80)),
    },
    stdio: 'pipe',
    detached: true,
  });
}

function clampSize(n: number, fallback: number): number {
  return Number.isInteger(n) && n > 0 && n < 10000 ? n : fallback;
}

/**
 * The pid of script(1)'s child (the wrapper, then the shell it execs) and its pts, once the child
 * has its terminal: right after fork its stdin is still script's pipe.
 */
export async function findPtyChild(scriptPid: number, deadlineMs = 5000): Promise<{ pid: number; pts: string } | null> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (!fs.existsSync(`/proc/${scriptPid}`)) return null; // script(1) has already exited.
    for (const child of childrenOf(scriptPid)) {
      const pts = ptsOf(child);
      if (pts) return { pid: child, pts };
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return null;
}

/** The children of `pid`: from /proc/<pid>/task/<pid>/children, else (a kernel without CONFIG_PROC_CHILDREN) by ppid. */
function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    const found: number[] = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) found.push(Number(entry));
      } catch {
        // Exited while we looked.
      }
    }
    return found;
  }
}

/** The pts that `pid` has on its stdin, e.g. `/dev/pts/3`, or null. */
function ptsOf(pid: number): string | null {
  try {
    const target = fs.readlinkSync(`/proc/${pid}/fd/0`);
    return target.startsWith('/dev/pts/') ? target : null;
  } catch {
    return null;
  }
}

/** The foreground process group of the terminal that `pid` belongs to (stat field 8, tpgid). */
export function foregroundGroup(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const tpgid = Number(fields[5]);
    return tpgid > 0 ? tpgid : null;
  } catch {
    return null;
  }
}

/** Applies a window size to a pts; the kernel signals SIGWINCH to its foreground group. */
export function resizePts(pts: string, rows: number, cols: number, label: string): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn('stty', ['-F', pts, 'rows', String(clampSize(rows, 24)), 'cols', String(clampSize(cols, 80))], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      log(`${label}: resize failed: ${errorText(e)}`);
      resolve();
    });
    child.on('close', (code) => {
      if (code !== 0) log(`${label}: resize of ${pts} failed: ${err.trim()}`);
      resolve();
    });
  });
}
