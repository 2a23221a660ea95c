// The data channel's port (PROTOCOL.md, "The data channel"): a second virtio-serial port, read and
// written like the agent channel (port.ts: blocking fs reads and writes on the threadpool, EOF while
// no host is connected) except that during a session a `cat` child reads it (port-pipe.ts: the port
// gives 4 KiB a read; the pipe gives Node up to 64 KiB a callback). It carries HTTP/2, whose frames
// are not encrypted, so nothing inside a session may be taken for the start of a new one. A session
// therefore begins only with a hello:
//
//   - With no session, the agent reads the port looking for the host's `COVE-DATA/1 <nonce>\n`
//     (bytes before it are dropped), answers the same line, and serves HTTP/2 on what follows.
//   - A session ends at EOF (the host left) or when the HTTP/2 side ends (the host sent GOAWAY, or
//     its bytes were not HTTP/2: a new host whose hello arrived before any read saw the old host's
//     EOF). Then the agent looks for a hello again. A host whose hello gets no answer closes,
//     waits and connects again, which gives the agent its EOF.
//   - The agent answers the hello and then waits for the host's connection preface before its
//     HTTP/2 side writes anything, so the answer line is the last thing a host reads before
//     HTTP/2: a host skips stale bytes up to its own nonce and hands the socket to its HTTP/2 client.
import * as fs from 'node:fs';
import { DATA_HELLO_BYTES, DATA_HELLO_RE, dataHello } from '../../contract/data-channel';
import { errorText, log } from '../log';
import { IDLE_POLL_MS, PortConnection, READ_SIZE, RETRY_MS, WRITE_CHUNK, findVirtioPort, openFd, readFd, sleep, writeFd } from './port';
import { PortPipe, stopStaleReaders } from './port-pipe';
import type { ServeConnection, Transport } from './transport';

/** How long the agent looks for the data port at start before it concludes the VM has none (an older VM shape). */
const LOCATE_MS = 30_000;

export interface DataPortOptions {
  /** `auto` to find the port by name, else the device (or FIFO) to read. */
  port: string;
  /** A separate path to write to (tests), else the port itself. */
  portOut: string | null;
  portsDir: string;
  portName: string;
  /** PATH to find `cat` on, which reads the port during a session (port-pipe.ts); null reads it on the threadpool. */
  pipePath: string | null;
}

/** Finds a hello line in the bytes read while no session runs; keeps a short tail across reads. */
export class HelloWatch {
  private tail = Buffer.alloc(0);

  reset(): void {
    this.tail = Buffer.alloc(0);
  }

  /** The nonce and the bytes after its line, or null (the chunk's tail is kept for the next read). */
  find(data: Buffer): { nonce: string; rest: Buffer } | null {
    const joined = this.tail.length > 0 ? Buffer.concat([this.tail, data]) : data;
    const m = DATA_HELLO_RE.exec(joined.toString('latin1'));
    if (!m) {
      this.tail = Buffer.from(joined.subarray(Math.max(0, joined.length - (DATA_HELLO_BYTES - 1))));
      return null;
    }
    this.tail = Buffer.alloc(0);
    return { nonce: m[1], rest: joined.subarray(m.index + m[0].length) };
  }
}

/**
 * A session's view of the port whose writes complete at once and go out in order behind them. Node's
 * HTTP/2 stops reading its socket while one of its writes is in progress; if the port's write waited
 * for the host, and the host's HTTP/2 waited in the same way for its own write into the port, a
 * transfer both ways at once would stall for good. What waits here is bounded by HTTP/2 flow
 * control: the host's receive windows (DATA_CONNECTION_WINDOW) plus a few control frames.
 */
export class DataConnection extends PortConnection {
  private readonly queue: Buffer[] = [];
  private pumping = false;
  /** Bytes queued and not yet written to the port. */
  queued = 0;

  constructor(private readonly wfd: number) {
    super(wfd);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.dead) return cb();
    this.queue.push(chunk);
    this.queued += chunk.length;
    cb();
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.dead) {
        // HTTP/2 writes a frame at a time (a 9-byte header, then its payload): what has gathered goes
        // to the port in one write of up to WRITE_CHUNK, each write being a threadpool round trip.
        const parts: Buffer[] = [];
        let size = 0;
        while (this.queue.length > 0 && (size === 0 || size + this.queue[0].length <= WRITE_CHUNK)) {
          const part = this.queue.shift() as Buffer;
          parts.push(part);
          size += part.length;
        }
        this.queued -= size;
        await writeAll(this.wfd, parts.length === 1 ? parts[0] : Buffer.concat(parts, size));
      }
    } catch (err) {
      log(`data: write to the port failed: ${errorText(err)}`);
      this.destroy();
    } finally {
      this.pumping = false;
      if (this.dead) {
        this.queue.length = 0;
        this.queued = 0;
      }
    }
  }
}

async function writeAll(fd: number, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await writeFd(fd, data.subarray(offset, Math.min(data.length, offset + WRITE_CHUNK)));
}

export class DataPortTransport implements Transport {
  name: string;
  private closed = false;
  private sessions = 0;
  /** The `cat` reading the port during a session, if any. */
  private pipe: PortPipe | null = null;
  /** Where `cat` is looked up; null once it cannot be run (or never asked for): threadpool reads. */
  private pipePath: string | null;

  constructor(private readonly opts: DataPortOptions) {
    this.name = `data:${opts.port}`;
    this.pipePath = opts.pipePath;
  }

  start(serve: ServeConnection): Promise<void> {
    void this.run(serve);
    return Promise.resolve();
  }

  close(): void {
    this.closed = true;
    this.pipe?.stop();
  }

  /**
   * From a session's first bytes on, the port is read by `cat` until the host leaves (its EOF ends
   * `cat`). Started after the HTTP/2 side has its first bytes, so that side's SETTINGS go out
   * without waiting for the fork under a loaded TCG guest; no read of the port is in flight then.
   */
  private startPipe(rfd: number): void {
    if (this.pipePath !== null && !this.pipe) this.pipe = new PortPipe(rfd, this.pipePath);
  }

  /**
   * The next bytes of the port: from the session's `cat` while one runs, else a threadpool read.
   * `eof`: no host is connected. `broken`: the reader died holding bytes it may not have passed on.
   */
  private async readPort(rfd: number): Promise<Buffer | { eof: true } | { broken: string }> {
    const pipe = this.pipe;
    if (pipe) {
      const r = await pipe.read();
      if ('data' in r) return r.data;
      this.pipe = null;
      if (r.end === 'eof') return { eof: true };
      log(`data: ${r.why}; the port is read on the threadpool${r.spawnFailed ? ' from now on' : ''}`);
      if (!r.spawnFailed) return { broken: r.why };
      // `cat` never ran, so it read nothing: this session goes on with threadpool reads.
      this.pipePath = null;
    }
    const buf = Buffer.allocUnsafe(READ_SIZE);
    const n = await readFd(rfd, buf);
    return n === 0 ? { eof: true } : buf.subarray(0, n);
  }

  private async locate(): Promise<string | null> {
    if (this.opts.port !== 'auto') return this.opts.port;
    const until = Date.now() + LOCATE_MS;
    for (;;) {
      const found = findVirtioPort(this.opts.portsDir, this.opts.portName);
      if (found) {
        this.name = `data:${found}`;
        return found;
      }
      if (Date.now() > until) return null;
      await sleep(RETRY_MS);
    }
  }

  private async run(serve: ServeConnection): Promise<void> {
    const device = await this.locate();
    if (!device) {
      log(`data: no virtio-serial port named ${this.opts.portName}: this VM has no data channel, hosts use SSH channels`);
      return;
    }
    while (!this.closed) {
      let rfd = -1;
      let wfd = -1;
      try {
        if (this.opts.portOut) {
          wfd = await openFd(this.opts.portOut, 'r+');
          rfd = await openFd(device, 'r');
        } else {
          rfd = wfd = await openFd(device, 'r+');
        }
        log(`data: serving HTTP/2 on ${device}${this.opts.portOut ? ` (writing ${this.opts.portOut})` : ''}`);
        await this.serveFd(rfd, wfd, serve);
      } catch (err) {
        log(`data: ${device}: ${errorText(err)}; retrying in ${RETRY_MS} ms`);
        if ((err as NodeJS.ErrnoException).code === 'EBUSY') {
          let stopped: string[] = [];
          try {
            stopped = stopStaleReaders(fs.realpathSync(device));
          } catch (e) {
            log(`data: cannot look for what holds ${device}: ${errorText(e)}`);
          }
          if (stopped.length > 0) log(`data: ${device} was held by ${stopped.join(', ')}, left by an earlier agent; stopped`);
        }
      } finally {
        for (const fd of new Set([rfd, wfd])) if (fd >= 0) fs.close(fd, () => undefined);
      }
      await sleep(RETRY_MS);
    }
  }

  private async serveFd(rfd: number, wfd: number, serve: ServeConnection): Promise<void> {
    let conn: DataConnection | undefined;
    let served = false;
    const hello = new HelloWatch();
    const endSession = (why: string): void => {
      if (!conn) return;
      log(`data: session data#${this.sessions} ended (${why})`);
      conn.dead = true;
      conn.push(null);
      conn.destroy();
      conn = undefined;
      hello.reset();
    };
    const give = async (c: DataConnection, data: Buffer): Promise<void> => {
      if (!c.push(data)) await c.waitForDemand();
    };
    try {
      while (!this.closed) {
        const got = await this.readPort(rfd);
        if ('eof' in got) {
          endSession('host disconnected');
          hello.reset();
          await sleep(IDLE_POLL_MS);
          continue;
        }
        if ('broken' in got) {
          endSession(got.broken);
          continue;
        }
        const data = got;
        if (conn && !conn.dead && !conn.destroyed) {
          if (!served) {
            // The host's first bytes after the hello (its connection preface): only now may the
            // HTTP/2 side speak (it writes its SETTINGS at once), so nothing follows the answer line
            // before the host has read it.
            served = true;
            serve(conn, `data#${this.sessions}`);
            this.startPipe(rfd);
          }
          await give(conn, data);
          continue;
        }
        if (conn) endSession('the HTTP/2 side ended');
        const found = hello.find(data);
        if (!found) continue; // Not a hello: bytes of a host whose session is over, dropped.
        await writeAll(wfd, Buffer.from(dataHello(found.nonce), 'latin1'));
        const c = new DataConnection(wfd);
        conn = c;
        served = false;
        log(`data: host connected, data#${++this.sessions}`);
        if (found.rest.length > 0) {
          served = true;
          serve(c, `data#${this.sessions}`);
          this.startPipe(rfd);
          await give(c, Buffer.from(found.rest));
        }
      }
    } finally {
      endSession('transport closed');
      this.pipe?.stop();
      this.pipe = null;
    }
  }
}
