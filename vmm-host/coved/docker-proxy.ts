// A sandbox's Docker socket: an HTTP proxy, with Node's own parser, in front of the guest's
// /var/run/docker.sock, so the bind-source guard (bind-guard.ts) can read `POST /containers/create`.
// Everything else passes as it came: raw header names and order, bodies streamed both ways.
//
// Each client connection gets its own guest channel, opened at its first request (so a request
// wakes a paused or asleep sandbox, and the channel counts for idleness as the relay's do) and kept
// for that connection's keep-alive requests. Hijacked streams (attach, exec, BuildKit's session:
// any request the parser sees as an upgrade) go raw on a fresh channel, with half-close carried both
// ways exactly as the plain relay does (relay.ts).
import * as http from 'node:http';
import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { MAX_CREATE_BODY_BYTES, checkCreateBody, isCreateRequest, tooLargeMessage, type BindPolicy } from './bind-guard';
import { closingServer, dockerUnavailable, listenPrivate, pipeBothWays } from './relay';

/** Request and response heads up to this size pass (X-Registry-Auth carries a whole credential). */
export const MAX_HEADER_BYTES = 1024 * 1024;

export interface DockerProxyOptions {
  path: string;
  /** Opens one guest channel to dockerd; rejects when the guest cannot be reached. */
  open: () => Promise<Duplex>;
  /**
   * Opens a channel for one request with a large body (UPLOAD_MIN_BYTES, or chunked), whose request
   * bytes may take a faster path than the answer (the stdin port); `open` is used when not given.
   */
  openUpload?: () => Promise<Duplex>;
  /** The message a client shows (`Error response from daemon: …`) when open() fails. */
  unavailable: (err: Error) => string;
  /** The guard's policy right now; null when the guard is off. Asked on every create request. */
  policy: () => BindPolicy | null;
  log: (msg: string) => void;
}

/** open() failed: the guest is away, and the client gets a 503 saying why. */
class GuestUnavailable extends Error {
  override name = 'GuestUnavailable';
}

/**
 * Node's HTTP client writes each piece of a chunked body as four writes (size, CRLF, data, CRLF)
 * on a corked socket. A net.Socket sends them in one writev; an SSH channel has no `_writev`, so
 * each would be an SSH packet of its own for the guest's agent to take one by one: ten times the
 * packets of the raw relay for a `docker load`. Joined, each piece is one write again.
 */
function coalesceWrites(ch: Duplex): Duplex {
  if (!ch._writev) {
    ch._writev = (chunks, callback) => {
      ch._write(Buffer.concat(chunks.map((c): Buffer => (Buffer.isBuffer(c.chunk) ? c.chunk : Buffer.from(c.chunk as string, c.encoding)))), 'binary', callback);
    };
  }
  return ch;
}

/**
 * The guest side of one client connection: at most one channel, opened when a request first needs
 * it and reused while dockerd keeps the connection alive. The Agent's defaults that touch a TCP
 * socket (keep-alive probes, ref/unref) do not apply to an SSH channel.
 */
class ChannelAgent extends http.Agent {
  private closed = false;

  constructor(
    private readonly openChannel: () => Promise<Duplex>,
    /** false: one request, and the channel closes after its answer (an upload's). */
    private readonly reuse = true,
  ) {
    super({ keepAlive: reuse, maxSockets: 1, maxFreeSockets: 1 });
  }

  override createConnection(_options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const done = callback ?? (() => undefined);
    this.openChannel().then(
      (ch) => {
        if (this.closed) {
          ch.destroy();
          done(new Error('the client connection closed'), ch);
        } else {
          done(null, coalesceWrites(ch));
        }
      },
      (err: unknown) => done(new GuestUnavailable(err instanceof Error ? err.message : String(err), { cause: err }), undefined as unknown as Duplex),
    );
    return undefined;
  }

  override keepSocketAlive(): boolean {
    return this.reuse;
  }

  override reuseSocket(): void {
    // A channel has no ref() to take back.
  }

  override destroy(): void {
    this.closed = true;
    super.destroy();
  }
}

/** A request body at least this large (or chunked, of unknown length) is an upload. */
export const UPLOAD_MIN_BYTES = 1024 * 1024;

/** Whether a request sends a large body: `docker load`, a build context, `docker cp` into a container. */
export function isUpload(req: http.IncomingMessage): boolean {
  if (req.method !== 'POST' && req.method !== 'PUT') return false;
  if (/\bchunked\b/i.test(req.headers['transfer-encoding'] ?? '')) return true;
  return Number(req.headers['content-length'] ?? 0) >= UPLOAD_MIN_BYTES;
}

/** Answers with an error the docker CLI, compose and the devcontainer CLI show as `Error response from daemon: …`. */
function answer(res: http.ServerResponse, status: number, message: string, close = false): void {
  if (res.destroyed) return; // The client has gone.
  const body = JSON.stringify({ message });
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    ...(status === 503 ? { 'Api-Version': '1.45' } : {}),
    ...(close ? { Connection: 'close' } : {}),
  });
  res.end(body);
}

/** The request line and headers as received (names, case and order kept). */
function requestHead(req: http.IncomingMessage): string {
  let head = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n`;
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) head += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
  return `${head}\r\n`;
}

/**
 * Reads a request body of at most `max` bytes. Past that it reads on to the end without keeping
 * anything (so the client, still sending, reads the refusal instead of a reset) and gives null.
 */
function readBounded(req: http.IncomingMessage, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size <= max) chunks.push(d);
      else chunks.length = 0;
    });
    req.on('end', () => resolve(size <= max ? Buffer.concat(chunks, size) : null));
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(new Error('the client went away while sending its request'));
    });
  });
}

/** Starts the proxy on `opts.path` (mode 0600, replacing a stale socket file). */
export async function startDockerProxy(opts: DockerProxyOptions): Promise<net.Server> {
  const agents = new WeakMap<net.Socket, ChannelAgent>();
  const agentFor = (socket: net.Socket): ChannelAgent => {
    let agent = agents.get(socket);
    if (!agent) {
      const a = new ChannelAgent(opts.open);
      agents.set(socket, a);
      socket.once('close', () => a.destroy());
      agent = a;
    }
    return agent;
  };

  /** Sends one request on the connection's channel and streams the answer back. */
  const forward = (req: http.IncomingMessage, res: http.ServerResponse, body?: Buffer) => {
    let headers = req.rawHeaders;
    if (body !== undefined && req.headers['transfer-encoding'] !== undefined) {
      // The client sent it chunked and it was read whole: dockerd gets it with its length.
      headers = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        if (!/^(transfer-encoding|content-length)$/i.test(req.rawHeaders[i])) headers.push(req.rawHeaders[i], req.rawHeaders[i + 1]);
      }
      headers.push('Content-Length', String(body.length));
    }
    // An upload gets a channel of its own, closed after its answer; the connection's stays for the rest.
    const upload = body === undefined && opts.openUpload !== undefined && isUpload(req) ? new ChannelAgent(opts.openUpload, false) : null;
    if (upload) res.once('close', () => upload.destroy());
    let up: http.ClientRequest;
    try {
      up = http.request({ agent: upload ?? agentFor(req.socket), method: req.method, path: req.url, headers, maxHeaderSize: MAX_HEADER_BYTES });
    } catch (e) {
      // Node's client checks the path and headers again; what its server let through passes here.
      answer(res, 400, `cove: the request cannot be passed on: ${(e as Error).message}`);
      req.resume();
      return;
    }
    up.on('response', (ur) => {
      try {
        res.writeHead(ur.statusCode ?? 502, ur.statusMessage, ur.rawHeaders);
      } catch (e) {
        opts.log(`docker socket: dockerd's answer to ${req.method ?? ''} ${req.url ?? ''} cannot be passed on: ${(e as Error).message}`);
        ur.destroy();
        res.destroy();
        return;
      }
      // Streaming answers (events, logs -f, wait) start with their head, before any body.
      res.flushHeaders();
      ur.pipe(res);
      ur.on('error', () => res.destroy());
    });
    up.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
      } else if (err instanceof GuestUnavailable) {
        answer(res, 503, opts.unavailable(err), true);
      } else {
        answer(res, 502, `cove: the connection to dockerd broke: ${err.message}`, true);
      }
    });
    // A client that goes away mid-request or mid-answer takes its channel with it.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    if (body !== undefined) up.end(body);
    else req.pipe(up);
  };

  const server = http.createServer({
    // Node's defaults would cut a long `docker load` or build (requestTimeout: 5 minutes for a whole
    // request), a slow head (headersTimeout), or close an idle keep-alive connection after 5 s
    // (keepAliveTimeout), which dockerd never does. The socket is the user's own (0600).
    requestTimeout: 0,
    headersTimeout: 0,
    keepAliveTimeout: 0,
    maxHeaderSize: MAX_HEADER_BYTES,
    // dockerd does not insist on Host; neither may its proxy.
    requireHostHeader: false,
  });
  server.maxHeadersCount = 0;
  // A client may send its request and then its EOF (`nc -U`, socat, a script's `end(request)`):
  // dockerd answers such a client, and so must its proxy. Node's default answers nothing and ends
  // the connection when the client's EOF comes first. (`httpAllowHalfOpen`: a Server property Node
  // reads in its 'end' handler, not in @types/node.)
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const policy = isCreateRequest(req.method, req.url) ? opts.policy() : null;
    if (!policy) {
      forward(req, res);
      return;
    }
    readBounded(req, MAX_CREATE_BODY_BYTES).then(
      (body) => {
        if (body === null) {
          answer(res, 413, tooLargeMessage(policy));
          return;
        }
        const refusal = checkCreateBody(body, policy);
        if (refusal !== null) {
          opts.log(`docker socket: refused a container: ${refusal}`);
          answer(res, 400, refusal);
          return;
        }
        forward(req, res, body);
      },
      () => res.destroy(),
    );
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    // The parser stops at an upgrade's head: `head` holds whatever followed, the body included.
    socket.on('error', () => socket.destroy());
    opts.open().then(
      (ch) => {
        if (socket.destroyed) {
          ch.destroy();
          return;
        }
        ch.write(requestHead(req));
        if (head.length > 0) ch.write(head);
        pipeBothWays(socket, ch);
      },
      (err: unknown) => dockerUnavailable(socket, opts.unavailable(err instanceof Error ? err : new Error(String(err)))),
    );
  });

  server.on('clientError', (err: NodeJS.ErrnoException, stream: Duplex) => {
    // As Node's own handler does, with a message the docker CLI shows: an answer only when nothing
    // of another answer has gone out on this connection.
    const socket = stream as Duplex & { _httpMessage?: { headersSent: boolean } | null };
    if (err.code === 'ECONNRESET' || !socket.writable || socket._httpMessage?.headersSent) {
      socket.destroy();
      return;
    }
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const message = tooLarge ? `cove: the request's head is over ${MAX_HEADER_BYTES / 1024 / 1024} MiB` : `cove: the request is not valid HTTP (${err.code ?? err.message})`;
    const body = JSON.stringify({ message });
    socket.once('finish', () => socket.destroy());
    socket.end(`HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });

  closingServer(server);
  await listenPrivate(server, opts.path);
  server.on('error', (err) => opts.log(`docker socket ${opts.path}: ${err.message}`));
  return server;
}
