// Reads a virtio-serial port through a `cat` child, for the data channel's bulk bytes.
//
// A read of a virtio-serial port returns at most one of the receive buffers the virtio console
// driver fills, 4 KiB each, and a char device cannot be a net.Socket, so reading it from Node costs
// one threadpool round trip and one JavaScript callback per 4 KiB: under TCG that, not the bytes,
// bounded the data channel. `cat`, given the port's open file as its stdin (the port opens only once;
// a child shares the open file), reads those 4 KiB pieces natively into a pipe, and Node reads the
// pipe with epoll, up to 64 KiB a callback. `cat` exits at the port's EOF, which is what a read of
// the port returns while no host is connected: the same signal the threadpool read gives.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { errorText } from '../log';

export type PipeRead = { data: Buffer } | { end: 'eof' } | { end: 'failed'; why: string; spawnFailed: boolean };

export class PortPipe {
  private readonly child: ChildProcess;
  private readonly chunks: AsyncIterator<Buffer>;
  private readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>;
  private spawned = false;

  /** Starts `cat` (looked up on `systemPath`) reading the open file `fd`. */
  constructor(fd: number, systemPath: string) {
    this.child = spawn('cat', [], { stdio: [fd, 'pipe', 'ignore'], env: { PATH: systemPath } });
    this.child.once('spawn', () => (this.spawned = true));
    this.exit = new Promise((resolve) => {
      this.child.once('error', (error) => resolve({ code: null, signal: null, error }));
      this.child.once('close', (code, signal) => resolve({ code, signal }));
    });
    this.chunks = (this.child.stdout as Readable)[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  /** The next bytes, or how the pipe ended: `eof` when the port said no host is connected. */
  async read(): Promise<PipeRead> {
    try {
      const next = await this.chunks.next();
      if (!next.done) return { data: next.value };
    } catch {
      // The pipe broke: the exit below says why.
    }
    const { code, signal, error } = await this.exit;
    if (error) return { end: 'failed', why: `cannot run cat: ${errorText(error)}`, spawnFailed: !this.spawned };
    if (code === 0) return { end: 'eof' };
    return { end: 'failed', why: `cat reading the port ended with ${signal ?? `exit code ${code}`}`, spawnFailed: false };
  }

  /** Stops the child (the transport is closing); bytes it read and did not hand over are dropped. */
  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/**
 * Kills every other process that holds `device` open and says which. An agent killed with SIGKILL
 * leaves its `cat` behind, still reading the port, and a virtio-serial port opens once at a time
 * (EBUSY): the agent that replaces it calls this when its open is refused. Such a `cat` would die at
 * its next read anyway (its pipe has no reader), but only after eating a hello the host sent to the
 * new agent. `procDir` is for tests.
 */
export function stopStaleReaders(device: string, procDir = '/proc'): string[] {
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
