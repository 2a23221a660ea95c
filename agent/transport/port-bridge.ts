// Gives a data channel session a real socket in front of the virtio-serial port.
//
// A char device cannot be a net.Socket, so a Duplex that reads and writes the port on the threadpool
// has to stand in for one, and Node's HTTP/2 then runs every read and write through its JavaScript
// stream shim (JSStreamSocket) as well as the Duplex: under TCG, that per-chunk JavaScript was what
// bounded the channel. Here a shell with two `cat`s bridges the port to one end of a socket pair
// (a spawn's extra `pipe` fd), and HTTP/2 gets the other end, a native socket: its frames are read
// and written in native code.
//
//   port ──(cat, reading)──▶ socket pair ──▶ HTTP/2
//   port ◀──(cat, writing)── socket pair ◀── HTTP/2
//
// The reading `cat` exits at the port's EOF (no host connected, the same signal a threadpool read
// gives); the shell then stops the writing one and exits, and the socket closes. The children run in
// their own process group, so the whole bridge is stopped with one kill.
//
// Writes into the bridge can wait: the writing `cat` waits for the host to read. This side then
// stops reading while its write is in progress (Node's HTTP/2 does), so coved must never stop
// reading its end, or a transfer both ways at once would stall: coved queues its writes instead
// (vmm-host/coved/data-link.ts, alwaysReading).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { errorText } from '../log';

/** fd 3: the socket pair; 4: the port, to read; 5: the port, to write. */
const BRIDGE_SCRIPT = 'cat <&3 >&5 & w=$!; cat <&4 >&3; rc=$?; kill $w 2>/dev/null; exit $rc';

export type BridgeEnd = { end: 'eof' } | { end: 'closed' } | { end: 'failed'; why: string };

export class PortBridge {
  /** The session's socket: hand it to HTTP/2 once `started` says yes. */
  readonly socket: net.Socket;
  /** True once the shell runs; false when it cannot be run (no `sh` on the PATH): nothing was read then. */
  readonly started: Promise<boolean>;
  private readonly child: ChildProcess;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>;

  /** Starts the bridge between the port's open files `rfd`, `wfd` and a socket; commands on `systemPath`. */
  constructor(rfd: number, wfd: number, systemPath: string) {
    this.child = spawn('sh', ['-c', BRIDGE_SCRIPT], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', rfd, wfd], env: { PATH: systemPath }, detached: true });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => resolve({ code: null, signal: null, error }));
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    this.started = new Promise((resolve) => {
      this.child.once('spawn', () => resolve(true));
      this.child.once('error', () => resolve(false));
    });
    this.socket = this.child.stdio[3] as net.Socket;
    // Errors show as the close below; a write after the bridge stopped must not become uncaught.
    this.socket.on('error', () => undefined);
  }

  /**
   * Resolves when the session is over: the host left (`eof`: the reading `cat` saw the port's EOF),
   * the HTTP/2 side closed the socket (`closed`), or the bridge failed. The bridge is stopped by then,
   * so nothing but the caller reads the port afterwards.
   */
  async done(): Promise<BridgeEnd> {
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    await Promise.race([this.exited, closed]);
    this.stop();
    const exit = await this.exited;
    // Exit code 0: the reading `cat` ended at EOF before any kill, whichever was seen first.
    if (exit.code === 0) return { end: 'eof' };
    if (exit.error) return { end: 'failed', why: `the port bridge (sh, cat) failed: ${errorText(exit.error)}` };
    if (exit.signal === 'SIGKILL') return { end: 'closed' };
    return { end: 'failed', why: `the port bridge ended with ${exit.signal ?? `exit code ${exit.code}`}` };
  }

  /** Stops the shell and both `cat`s (their process group) and closes the socket. */
  stop(): void {
    const pid = this.child.pid;
    if (pid !== undefined) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    this.socket.destroy();
  }
}

/**
 * Kills every other process that holds `device` open and says which. An agent killed with SIGKILL
 * leaves its bridge behind, still reading the port, and a virtio-serial port opens once at a time
 * (EBUSY): the agent that replaces it calls this when its open is refused. Such a `cat` would die at
 * its next read anyway (its socket has no reader), but only after eating a hello the host sent to the
 * new agent.
 */
export function stopStaleReaders(device: string): string[] {
  const procDir = '/proc';
  const stopped: string[] = [];
  for (const entry of fs.readdirSync(procDir)) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(path.join(procDir, entry, 'fd'));
    } catch {
      continue; // Gone meanwhile, or a kernel thread.
    }
    const holds = fds.some((fd) => {
      try {
        return fs.readlinkSync(path.join(procDir, entry, 'fd', fd)) === device;
      } catch {
        return false;
      }
    });
    if (!holds) continue;
    let comm = '?';
    try {
      comm = fs.readFileSync(path.join(procDir, entry, 'comm'), 'utf8').trim();
    } catch {
      // Gone meanwhile: the kill below says so.
    }
    try {
      process.kill(pid, 'SIGKILL');
      stopped.push(`${pid} (${comm})`);
    } catch (err) {
      stopped.push(`${pid} (${comm}, not stopped: ${errorText(err)})`);
    }
  }
  return stopped;
}
