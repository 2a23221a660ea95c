// The data channel's port (PROTOCOL.md, "The data channel"): a second virtio-serial port. Between
// sessions the agent reads it like the agent channel (port.ts: blocking fs reads on the threadpool,
// EOF while no host is connected); a session runs on a socket that a shell with two `cat`s bridges to
// the port (port-bridge.ts), so that HTTP/2 reads and writes in native code. Where `sh` or `cat`
// cannot run, the session is read and written on the threadpool too (DataConnection). The port
// carries HTTP/2, whose frames are not encrypted, so nothing inside a session may be taken for the
// start of a new one. A session therefore begins only with a hello:
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
import { PortBridge, stopStaleReaders } from './port-bridge';
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
  /** PATH to find `sh` and `cat` on, which bridge a session to a socket (port-bridge.ts); null: the threadpool. */
  bridgePath: string | null;
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
  /** The bridge of the session now running, if any. */
  private bridge: PortBridge | null = null;
  /** Where `sh` and `cat` are looked up; null once they cannot be run (or never asked for): threadpool sessions. */
  private bridgePath: string | null;

  constructor(private readonly opts: DataPortOptions) {
    this.name = `data:${opts.port}`;
    this.bridgePath = opts.bridgePath;
  }

  start(serve: ServeConnection): Promise<void> {
    void this.run(serve);
    return Promise.resolve();
  }

  close(): void {
    this.closed = true;
    this.bridge?.stop();
  }

  /**
   * Runs one session on a bridge, its HTTP/2 side starting with `first` (the host's first bytes,
   * read on the threadpool), until it ends. False when the bridge cannot run: nothing was served
   * and the port was not read, so the caller serves the session on the threadpool instead.
   */
  private async bridgeSession(rfd: number, wfd: number, first: Buffer, serve: ServeConnection, label: string): Promise<boolean> {
    const bridge = new PortBridge(rfd, wfd, this.bridgePath ?? '');
    if (!(await bridge.started)) {
      const end = await bridge.done();
      log(`data: ${'why' in end ? end.why : 'the port bridge did not start'}; sessions are read and written on the threadpool from now on`);
      this.bridgePath = null;
      return false;
    }
    this.bridge = bridge;
    bridge.socket.unshift(first);
    serve(bridge.socket, label);
    const end = await bridge.done();
    this.bridge = null;
    log(`data: session ${label} ended (${end.end === 'eof' ? 'host disconnected' : end.end === 'closed' ? 'the HTTP/2 side ended' : end.why})`);
    return true;
  }

  /** The next bytes of the port, read on the threadpool; `eof`: no host is connected. */
  private async readPort(rfd: number): Promise<Buffer | { eof: true }> {
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
    /** A session read and written on the threadpool (no bridge), if one runs. */
    let conn: DataConnection | undefined;
    /** The hello was answered; the host's first bytes start the session. */
    let answered = false;
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
    /**
     * The host's first bytes after the hello (its connection preface): only now may the HTTP/2 side
     * speak (it writes its SETTINGS at once), so nothing follows the answer line before the host has
     * read it.
     */
    const startSession = async (first: Buffer): Promise<void> => {
      answered = false;
      const label = `data#${this.sessions}`;
      if (this.bridgePath !== null && (await this.bridgeSession(rfd, wfd, first, serve, label))) {
        hello.reset();
        return;
      }
      const c = new DataConnection(wfd);
      conn = c;
      serve(c, label);
      await give(c, first);
    };
    try {
      while (!this.closed) {
        const got = await this.readPort(rfd);
        if ('eof' in got) {
          endSession('host disconnected');
          answered = false;
          hello.reset();
          await sleep(IDLE_POLL_MS);
          continue;
        }
        const data = got;
        if (answered) {
          await startSession(data);
          continue;
        }
        if (conn && !conn.dead && !conn.destroyed) {
          await give(conn, data);
          continue;
        }
        if (conn) endSession('the HTTP/2 side ended');
        const found = hello.find(data);
        if (!found) continue; // Not a hello: bytes of a host whose session is over, dropped.
        await writeAll(wfd, Buffer.from(dataHello(found.nonce), 'latin1'));
        log(`data: host connected, data#${++this.sessions}`);
        answered = true;
        if (found.rest.length > 0) await startSession(Buffer.from(found.rest));
      }
    } finally {
      endSession('transport closed');
      this.bridge?.stop();
      this.bridge = null;
    }
  }
}
