// coved's end of the data channel (agent/PROTOCOL.md, "The data channel"): qemu's unix socket for
// the second virtio-serial port, one HTTP/2 session on it (Node's http2 client, nghttp2 underneath),
// and one CONNECT stream per connection to dockerd's socket or a guest TCP port. SSH stays for
// control; when this link is down (an older VM without the port, an agent that does not answer the
// hello, a restart in progress) the sandbox falls back to SSH channels.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import { envSwitch } from './env-parse';
import { DATA_CONNECTION_WINDOW, DATA_ERROR_HEADER, DATA_SETTINGS, dataAuthority, dataHello, type DataTarget } from '../../contract/data-channel';

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_STATUS, HTTP2_METHOD_CONNECT } = http2.constants;

/** Most bytes skipped ahead of the agent's hello answer (stale writes of an earlier session). */
const MAX_STALE_BYTES = 4 * 1024 * 1024;
/** How long a CONNECT may wait for the guest's answer before it counts as a failure of the link. */
const OPEN_TIMEOUT_MS = 30_000;
/**
 * How long the agent has, once it answered the hello, to start HTTP/2 (its SETTINGS): a guest
 * starting dockerd under TCG on a loaded host took more than 5 s. SSH carries the traffic meanwhile.
 */
const START_TIMEOUT_MS = 30_000;

/**
 * Whether the data channel is used when COVE_DATA_CHANNEL does not say: yes (docs/data-path.md has
 * the bench pair that decided it: `load.100m` 8 % of in-guest over SSH channels, 76 % over it).
 */
export const DATA_CHANNEL_DEFAULT = true;

/**
 * `COVE_DATA_CHANNEL`: `off` keeps the Docker socket, forwarded ports and ssh.sock on SSH channels
 * (for comparison, or to rule the channel out); `on`, or nothing, uses the data channel where the
 * VM has one.
 */
export function dataChannelEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return envSwitch(env, 'COVE_DATA_CHANNEL', DATA_CHANNEL_DEFAULT);
}

export interface DataLinkOptions {
  /** qemu's end of the data port. */
  dataSock: string;
  log: (msg: string) => void;
  /** How long the agent may take to answer a hello (the first one waits for a booting guest). */
  helloTimeoutMs: number;
  firstHelloTimeoutMs: number;
}

/** The link itself failed (not the target): the caller may fall back to SSH. */
export class DataLinkDown extends Error {
  override name = 'DataLinkDown';
}

export function isDataLinkDown(e: unknown): e is DataLinkDown {
  return e instanceof DataLinkDown;
}

/** The guest could not reach the target (dockerd down, nothing listening): SSH would fare no better. */
export class DataTargetError extends Error {
  override name = 'DataTargetError';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Reads from `sock` until the line `hello` and resolves with nothing after it (the agent writes
 * nothing more until it has our preface). Bytes before it are an earlier session's, skipped.
 */
export function awaitHello(sock: net.Socket, hello: string, timeoutMs: number): Promise<void> {
  const want = Buffer.from(hello, 'latin1');
  return new Promise((resolve, reject) => {
    let seen: Buffer = Buffer.alloc(0);
    let skipped = 0;
    const done = (err?: Error) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.off('error', onError);
      sock.pause();
      if (err) reject(err);
      else resolve();
    };
    const onData = (d: Buffer) => {
      seen = seen.length > 0 ? Buffer.concat([seen, d]) : d;
      const at = seen.indexOf(want);
      if (at < 0) {
        const keep = Math.min(seen.length, want.length - 1);
        skipped += seen.length - keep;
        seen = Buffer.from(seen.subarray(seen.length - keep));
        if (skipped > MAX_STALE_BYTES) done(new Error('the agent sent no hello answer'));
        return;
      }
      if (at + want.length !== seen.length) return done(new Error('the agent wrote after its hello answer before the HTTP/2 preface'));
      done();
    };
    const onClose = () => done(new Error('the data channel closed during the hello'));
    const onError = (err: Error) => done(new Error(`cannot open the data channel: ${err.message}`));
    const timer = setTimeout(() => done(new Error(`the agent did not answer the data channel's hello within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    sock.on('data', onData);
    sock.once('close', onClose);
    sock.once('error', onError);
  });
}

/**
 * The qemu socket as coved's HTTP/2 sees it: every write completes at once (it waits in the socket,
 * bounded by the HTTP/2 windows), so coved never stops reading the guest. The agent's port bridge
 * makes the guest's writes wait for coved to read, and Node's HTTP/2 stops reading while a write of
 * its own is in progress: if coved did the same, a transfer both ways at once could stall for good
 * (agent/transport/port-bridge.ts). The host has the CPU for the JavaScript this puts in the way.
 */
export function alwaysReading(sock: net.Socket): Duplex {
  const d = new Duplex({
    read() {
      sock.resume();
    },
    write(chunk: Buffer, _encoding, cb) {
      sock.write(chunk);
      cb();
    },
    final(cb) {
      sock.end();
      cb();
    },
    destroy(err, cb) {
      sock.destroy();
      cb(err);
    },
  });
  sock.on('data', (b: Buffer) => {
    if (!d.push(b)) sock.pause();
  });
  sock.on('end', () => d.push(null));
  sock.on('close', () => d.destroy());
  return d;
}

type WriteCallback = (err?: Error | null) => void;
interface WritevChunk {
  chunk: Buffer | string;
  encoding: BufferEncoding | 'buffer';
}

/**
 * Makes an HTTP/2 stream write only Buffers. Node 20's Http2Stream writes a string chunk from native
 * storage it frees before nghttp2 has sent it: Node's HTTP client ends a request with a body as one
 * writev of [head (latin1 string), body, ''], and dockerd got the head's first 16 bytes overwritten
 * (malloc's free-list pointers). Buffers are kept alive by the write request until they are sent.
 */
export function buffersOnly(stream: http2.ClientHttp2Stream): void {
  const s = stream as unknown as {
    _write(chunk: Buffer | string, encoding: BufferEncoding, cb: WriteCallback): void;
    _writev(chunks: WritevChunk[] & { allBuffers?: boolean }, cb: WriteCallback): void;
  };
  const write = s._write.bind(stream);
  const writev = s._writev.bind(stream);
  s._write = (chunk, encoding, cb) => {
    if (typeof chunk !== 'string') return write(chunk, encoding, cb);
    if (chunk.length === 0) return cb();
    write(Buffer.from(chunk, encoding), 'buffer' as BufferEncoding, cb);
  };
  s._writev = (chunks, cb) => {
    const bufs: WritevChunk[] & { allBuffers?: boolean } = [];
    for (const c of chunks) {
      const b = typeof c.chunk === 'string' ? Buffer.from(c.chunk, c.encoding as BufferEncoding) : c.chunk;
      if (b.length > 0) bufs.push({ chunk: b, encoding: 'buffer' });
    }
    if (bufs.length === 0) return cb();
    bufs.allBuffers = true;
    writev(bufs, cb);
  };
}

/** A stream the guest answered with 200 (DataLink.request). */
export interface OpenedStream {
  stream: http2.ClientHttp2Stream;
  headers: http2.IncomingHttpHeaders;
  trailers(): http2.IncomingHttpHeaders | null;
}

/** Events: 'up', 'down'. */
export class DataLink extends EventEmitter {
  private session: http2.ClientHttp2Session | null = null;
  private socket: net.Socket | null = null;
  private running = false;
  private everUp = false;
  private generation = 0;
  private wake: (() => void) | null = null;

  constructor(private readonly opts: DataLinkOptions) {
    super();
  }

  get isUp(): boolean {
    return this.session !== null;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  close(): void {
    this.running = false;
    this.teardown();
    this.wake?.();
  }

  /** Drops the session so the loop makes a fresh one (the agent restarted, the VM stalled). */
  reset(reason: string): void {
    if (!this.session && !this.socket) return;
    this.opts.log(`data channel reset: ${reason}`);
    this.teardown();
  }

  private teardown(): void {
    const wasUp = this.session !== null;
    this.generation++;
    this.session?.destroy();
    this.session = null;
    this.socket?.destroy();
    this.socket = null;
    if (wasUp) this.emit('down');
    // The loop waits while a session is up: it must go on to connect again.
    this.wake?.();
  }

  private async loop(): Promise<void> {
    // The agent must see the old host leave (EOF) before a new hello arrives, so every retry waits.
    const minBackoff = 1500;
    let backoff = minBackoff;
    while (this.running) {
      if (this.session) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = null;
        continue;
      }
      const gen = ++this.generation;
      try {
        await this.connectOnce(gen);
        backoff = minBackoff;
      } catch (e) {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- close() may run meanwhile
        if (!this.running) return;
        this.opts.log(`data channel: ${(e as Error).message}; SSH channels carry the traffic, retrying in ${Math.round(backoff / 1000)} s`);
        this.socket?.destroy();
        this.socket = null;
        await sleep(backoff);
        // An agent without the data channel (an older image) never answers: try now and then.
        backoff = Math.min(backoff * 2, 60_000);
      }
    }
  }

  private async connectOnce(gen: number): Promise<void> {
    const sock = net.connect(this.opts.dataSock);
    this.socket = sock;
    // Failures are seen where they matter (the connect, the hello, the HTTP/2 session's close); a
    // late write error (EPIPE after qemu closed) must not reach the process as an uncaught one.
    sock.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', (err) => reject(new Error(`cannot open the data channel: ${err.message}`)));
    });
    const hello = dataHello(randomBytes(16).toString('hex'));
    sock.write(hello);
    await awaitHello(sock, hello, this.everUp ? this.opts.helloTimeoutMs : this.opts.firstHelloTimeoutMs);
    const session = http2.connect('http://cove.data', {
      createConnection: () => alwaysReading(sock),
      settings: DATA_SETTINGS,
      maxSessionMemory: 256,
    });
    await new Promise<void>((resolve, reject) => {
      const startMs = Math.max(START_TIMEOUT_MS, this.opts.helloTimeoutMs);
      const timer = setTimeout(() => reject(new Error(`the agent did not start HTTP/2 on the data channel within ${Math.round(startMs / 1000)} s`)), startMs);
      session.once('remoteSettings', () => {
        clearTimeout(timer);
        resolve();
      });
      session.once('error', (err: Error) => {
        clearTimeout(timer);
        reject(new Error(`HTTP/2 on the data channel failed: ${err.message}`));
      });
      session.once('close', () => {
        clearTimeout(timer);
        reject(new Error('the data channel closed before HTTP/2 started'));
      });
    }).catch((e: unknown) => {
      session.destroy();
      throw e;
    });
    if (gen !== this.generation || !this.running) {
      session.destroy();
      throw new Error('superseded');
    }
    session.setLocalWindowSize(DATA_CONNECTION_WINDOW);
    session.on('error', (err: Error) => this.opts.log(`data channel error: ${err.message}`));
    session.once('close', () => {
      if (this.session !== session) return;
      this.opts.log('data channel closed');
      this.session = null;
      this.socket?.destroy();
      this.socket = null;
      this.emit('down');
      this.wake?.();
    });
    // Nothing waits on this session: it must not keep coved alive by itself.
    session.unref();
    this.session = session;
    this.everUp = true;
    this.opts.log('data channel up (HTTP/2)');
    this.emit('up');
  }

  /** One stream to `target` in the guest; resolves once the guest has connected it. */
  async open(target: DataTarget): Promise<Duplex> {
    return (await this.request(dataAuthority(target))).stream;
  }

  /**
   * One CONNECT to `authority` with `extra` request headers; resolves with the stream and the
   * guest's answer once it is 200. The stream is a Duplex of the two bodies; `trailers()` is what
   * the guest sent as trailers so far (caught from the start: a short answer's trailers can be
   * emitted before a caller that awaits this could listen for them).
   */
  request(authority: string, extra: http2.OutgoingHttpHeaders = {}): Promise<OpenedStream> {
    const session = this.session;
    if (!session || session.closed || session.destroyed) return Promise.reject(new DataLinkDown('the data channel is down'));
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request({ ...extra, [HTTP2_HEADER_METHOD]: HTTP2_METHOD_CONNECT, [HTTP2_HEADER_AUTHORITY]: authority });
    } catch (e) {
      return Promise.reject(new DataLinkDown(`the data channel refused a stream: ${(e as Error).message}`));
    }
    buffersOnly(stream);
    let trailers: http2.IncomingHttpHeaders | null = null;
    stream.once('trailers', (t: http2.IncomingHttpHeaders) => (trailers = t));
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        clearTimeout(timer);
        stream.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new DataLinkDown(`the guest did not answer a stream open within ${OPEN_TIMEOUT_MS / 1000} s`)), OPEN_TIMEOUT_MS);
      stream.once('response', (headers) => {
        clearTimeout(timer);
        const status = Number(headers[HTTP2_HEADER_STATUS]);
        if (status === 200) {
          stream.off('error', onError);
          stream.off('close', onClose);
          stream.on('error', () => undefined); // pipeBothWays adds its own; a late reset is not fatal here.
          resolve({ stream, headers, trailers: () => trailers });
          return;
        }
        const given = headers[DATA_ERROR_HEADER];
        const why = typeof given === 'string' ? given : `status ${status}`;
        // 400: this agent does not serve that target (an older one may not know agent.sock), so
        // the caller falls back to SSH; 502: the target itself cannot be reached.
        fail(status === 400 ? new DataLinkDown(`the agent refused ${authority}: ${why}`) : new DataTargetError(why));
      });
      const onError = (err: Error) => fail(new DataLinkDown(`the data channel stream failed: ${err.message}`));
      const onClose = () => fail(new DataLinkDown('the data channel stream closed before the guest answered'));
      stream.once('error', onError);
      stream.once('close', onClose);
    });
  }
}
