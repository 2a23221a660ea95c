// The agent channel: a virtio-serial port (a char device) that qemu exposes to coved as a unix
// socket. It is one byte stream shared with whichever host process is connected, so the agent
// serves one SSH connection at a time on it:
//
//   - A read that returns 0 bytes (EOF) means no host is connected. The agent ends the current SSH
//     connection, if any, and polls every 200 ms until bytes arrive again; the first bytes of a
//     new host start a fresh SSH connection. All bytes of the old host are read before its EOF, so
//     none reach the new connection.
//   - Writes block in the kernel while no host is connected. A write that was in flight when the
//     host left completes when the next host connects, so the next host may see stale bytes ahead
//     of the new session's version line. Hosts drop them with skipToBanner() (api/banner-sync.ts),
//     which reads from the agent's `SSH-2.0-cove-agent_` banner on. Writes are cut to the 32 KiB
//     the virtio console driver takes per write, which also bounds those stale bytes.
//
// net.Socket does not take a char device's fd, so the port is read and written with fs.read and
// fs.write on the libuv threadpool (threadpool.ts widens it). Tests stand a FIFO pair in for the
// device: a FIFO read with no writer returns EOF like a port with no host.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { errorText, log } from '../log';
import type { ServeConnection, Transport } from './transport';

const IDLE_POLL_MS = 200;
const RETRY_MS = 1000;
const READ_SIZE = 64 * 1024;
export const WRITE_CHUNK = 32 * 1024;

/** Finds the char device of the virtio-serial port named `name`, or null. */
export function findVirtioPort(portsDir: string, name: string): string | null {
  let entries: string[];
  try {
    entries = fs.readdirSync(portsDir);
  } catch {
    return null;
  }
  for (const entry of entries.sort()) {
    try {
      if (fs.readFileSync(path.join(portsDir, entry, 'name'), 'utf8').trim() === name) return path.join('/dev', entry);
    } catch {
      // A port without a name file: not ours.
    }
  }
  return null;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function readFd(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

function writeFd(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

function openFd(file: string, flags: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
}

/** One SSH connection's view of the port. */
class PortConnection extends Duplex {
  /** Set when the host left or the SSH side ended: nothing more is written. */
  dead = false;
  private readWaiter: (() => void) | undefined;
  readonly remoteAddress = 'agent-port';
  readonly remotePort = 0;
  readonly remoteFamily = 'virtio-serial';

  constructor(private readonly fd: number) {
    super({ allowHalfOpen: false });
  }

  override _read(): void {
    const waiter = this.readWaiter;
    this.readWaiter = undefined;
    waiter?.();
  }

  /** Resolves when the SSH side wants more bytes. */
  waitForDemand(): Promise<void> {
    return new Promise((resolve) => (this.readWaiter = resolve));
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    void this.writeAll(chunk).then(() => cb(), (err: unknown) => cb(err as Error));
  }

  private async writeAll(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length && !this.dead) {
      const piece = chunk.subarray(offset, Math.min(chunk.length, offset + WRITE_CHUNK));
      offset += await writeFd(this.fd, piece);
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.dead = true;
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.dead = true;
    this.readWaiter?.();
    this.readWaiter = undefined;
    cb(err);
  }

  setNoDelay(): this {
    return this;
  }
}

export interface PortTransportOptions {
  /** `auto` to find the port by name, else the device (or FIFO) to read. */
  port: string;
  /** A separate path to write to (tests), else the port itself. */
  portOut: string | null;
  portsDir: string;
  portName: string;
}

export class PortTransport implements Transport {
  name: string;
  private closed = false;
  private sessions = 0;

  constructor(private readonly opts: PortTransportOptions) {
    this.name = `port:${opts.port}`;
  }

  async start(serve: ServeConnection): Promise<void> {
    void this.run(serve);
  }

  close(): void {
    this.closed = true;
  }

  private async locate(): Promise<string> {
    if (this.opts.port !== 'auto') return this.opts.port;
    let logged = false;
    for (;;) {
      const found = findVirtioPort(this.opts.portsDir, this.opts.portName);
      if (found) {
        this.name = `port:${found}`;
        return found;
      }
      if (!logged) log(`port: no virtio-serial port named ${this.opts.portName} under ${this.opts.portsDir} yet; waiting`);
      logged = true;
      await sleep(RETRY_MS * 2);
    }
  }

  private async run(serve: ServeConnection): Promise<void> {
    while (!this.closed) {
      const device = await this.locate();
      let rfd = -1;
      let wfd = -1;
      try {
        if (this.opts.portOut) {
          // A FIFO pair: the write side is opened read-write so the open never blocks for a reader.
          wfd = await openFd(this.opts.portOut, 'r+');
          rfd = await openFd(device, 'r');
        } else {
          rfd = wfd = await openFd(device, 'r+');
        }
        log(`port: serving SSH on ${device}${this.opts.portOut ? ` (writing ${this.opts.portOut})` : ''}`);
        await this.serveFd(rfd, wfd, serve);
      } catch (err) {
        log(`port: ${device}: ${errorText(err)}; retrying in ${RETRY_MS} ms`);
      } finally {
        for (const fd of new Set([rfd, wfd])) if (fd >= 0) fs.close(fd, () => undefined);
      }
      await sleep(RETRY_MS);
    }
  }

  private async serveFd(rfd: number, wfd: number, serve: ServeConnection): Promise<void> {
    let conn: PortConnection | undefined;
    const endConnection = (why: string): void => {
      if (!conn) return;
      log(`port: connection ${conn === undefined ? '' : `port#${this.sessions}`} ended (${why})`);
      conn.dead = true;
      conn.push(null);
      conn.destroy();
      conn = undefined;
    };
    try {
      while (!this.closed) {
        const buf = Buffer.allocUnsafe(READ_SIZE);
        const n = await readFd(rfd, buf);
        if (n === 0) {
          endConnection('host disconnected');
          await sleep(IDLE_POLL_MS);
          continue;
        }
        const data = buf.subarray(0, n);
        if (!conn) {
          conn = new PortConnection(wfd);
          const label = `port#${++this.sessions}`;
          log(`port: host connected, ${label}`);
          serve(conn, label);
        }
        if (conn.destroyed || conn.dead) continue; // The SSH side ended: drop bytes until the host's EOF.
        if (!conn.push(data)) {
          await conn.waitForDemand();
        }
      }
    } finally {
      endConnection('transport closed');
    }
  }
}
