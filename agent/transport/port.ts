// The agent channel: a virtio-serial port (a char device) that qemu exposes to coved as a unix
// socket. It is one byte stream shared with whichever host process is connected, so the agent
// serves one SSH connection at a time on it:
//
//   - A read that returns 0 bytes (EOF) means no host is connected. The agent ends the current SSH
//     connection, if any, and polls every 200 ms until bytes arrive again; the first bytes of a
//     new host start a fresh SSH connection. All bytes of the old host are read before its EOF, so
//     none reach the new connection.
//   - The kernel reports EOF only while no host is connected: when one host leaves and the next
//     connects at once (qemu accepts a queued connection as soon as the previous one closes), no
//     read sees it. The next host's SSH version line (`SSH-2.0-`) then shows up inside the old
//     connection's bytes, where it cannot otherwise occur (VersionLineWatch); the agent ends the
//     old connection and starts a new one at that line.
//   - Writes block in the kernel while no host is connected. A write that was in flight when the
//     host left completes when the next host connects, so the next host may see stale bytes ahead
//     of the new session's version line. Hosts drop them with skipToBanner() (contract/banner-sync.ts),
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

export const IDLE_POLL_MS = 200;
export const RETRY_MS = 1000;
export const READ_SIZE = 64 * 1024;
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

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function readFd(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

export function writeFd(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

export function openFd(file: string, flags: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
}

/** One host connection's view of the port (an SSH connection here; the data channel's HTTP/2 session in data-port.ts). */
export class PortConnection extends Duplex {
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
    this.readWaiter?.(); // The SSH side stopped reading: the port loop must not wait for it.
    this.readWaiter = undefined;
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

  start(serve: ServeConnection): Promise<void> {
    void this.run(serve);
    return Promise.resolve();
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
    const watch = new VersionLineWatch();
    const endConnection = (why: string): void => {
      if (!conn) return;
      log(`port: connection port#${this.sessions} ended (${why})`);
      conn.dead = true;
      conn.push(null);
      conn.destroy();
      conn = undefined;
    };
    const startConnection = (): PortConnection => {
      const c = new PortConnection(wfd);
      conn = c;
      watch.reset();
      const label = `port#${++this.sessions}`;
      log(`port: host connected, ${label}`);
      serve(c, label);
      return c;
    };
    const give = async (c: PortConnection, data: Buffer): Promise<void> => {
      watch.feed(data);
      if (!c.push(data)) await c.waitForDemand();
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
        const at = watch.find(data);
        if (!conn) {
          // A new host: its SSH version line comes first; anything before it is not for us.
          const first = at !== null && at > 0 ? data.subarray(at) : data;
          await give(startConnection(), first);
          continue;
        }
        if (at !== null) {
          // Another host's version line: the previous host left and the next one connected before a
          // read could see the EOF between them (the kernel only reports EOF while no host is there).
          endConnection('a new host connected');
          const first = at >= 0 ? data.subarray(at) : Buffer.concat([CLIENT_VERSION.subarray(0, -at), data]);
          await give(startConnection(), first);
          continue;
        }
        if (conn.destroyed || conn.dead) continue; // The SSH side ended: drop bytes until EOF or a new host.
        await give(conn, data);
      }
    } finally {
      endConnection('transport closed');
    }
  }
}

/** Every SSH client starts with its version line (RFC 4253 4.2). */
const CLIENT_VERSION = Buffer.from('SSH-2.0-', 'latin1');

/**
 * Spots an SSH client's version line in the bytes of a port connection after its own. After the
 * version exchange everything on the wire is binary packets (encrypted after the first key
 * exchange), so the 8 bytes `SSH-2.0-` there mean a new host (a chance of about 2^-64 per offset
 * otherwise). The last 7 bytes of each chunk are kept, so a line split across two reads is found.
 */
export class VersionLineWatch {
  private tail = Buffer.alloc(0);
  private seen = 0;

  reset(): void {
    this.tail = Buffer.alloc(0);
    this.seen = 0;
  }

  /** Where a version line starts in `data`: an offset, negative when it began in the previous chunk; or null. */
  find(data: Buffer): number | null {
    const joined = this.tail.length > 0 ? Buffer.concat([this.tail, data]) : data;
    const at = joined.indexOf(CLIENT_VERSION);
    return at < 0 ? null : at - this.tail.length;
  }

  /** Records bytes given to the current connection; its own version line is never a match. */
  feed(data: Buffer): void {
    const skip = Math.max(0, CLIENT_VERSION.length - this.seen);
    this.seen += data.length;
    const joined = Buffer.concat([this.tail, data.subarray(Math.min(skip, data.length))]);
    this.tail = joined.subarray(Math.max(0, joined.length - (CLIENT_VERSION.length - 1)));
  }
}
