// A host unix socket whose every connection becomes one SSH channel into the guest: the Docker
// socket (to /var/run/docker.sock) and the SSH endpoint (to the agent's own socket) are both this.
// Half-close is carried both ways, so hijacked Docker streams (attach, exec, build) end cleanly.
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';

export interface RelayOptions {
  path: string;
  /** Opens the guest end for one connection; rejects when the guest cannot be reached. */
  open: () => Promise<Duplex>;
  /** Called instead of relaying when open() fails; should answer and end the connection. */
  unavailable: (conn: net.Socket, err: Error) => void;
  log: (msg: string) => void;
}

/** How long the survivor of a failed side may take to pass on what it still holds before it is dropped. */
export const DRAIN_MS = 10_000;

/**
 * Relays two streams both ways. When one side fails, the other is ended, not destroyed: what was
 * already handed to it still reaches its peer (an exec's exit status is the last thing its channel
 * carries, and a client that reads slowly, as every client does while coved is busy, may not have it
 * yet). A survivor that has not closed within DRAIN_MS is destroyed.
 */
export function pipeBothWays(a: Duplex, b: Duplex): void {
  a.pipe(b);
  b.pipe(a);
  const failed = (broken: Duplex, survivor: Duplex) => () => {
    broken.destroy();
    survivor.end();
    const timer = setTimeout(() => survivor.destroy(), DRAIN_MS);
    timer.unref();
    survivor.once('close', () => clearTimeout(timer));
  };
  a.on('error', failed(a, b));
  b.on('error', failed(b, a));
  // When one side is fully closed the other has nothing left to talk to.
  a.on('close', () => b.end());
  b.on('close', () => a.end());
}

/**
 * A server whose close() also ends its open connections: `net.Server.close` alone waits for every
 * client to leave, so one idle docker or curl connection would hold a stop or a removal forever.
 */
export function closingServer(server: net.Server): net.Server {
  const conns = new Set<net.Socket>();
  server.on('connection', (c: net.Socket) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
  });
  const close = server.close.bind(server);
  server.close = (cb?: (err?: Error) => void) => {
    close(cb);
    for (const c of conns) c.destroy();
    return server;
  };
  return server;
}

/**
 * `server.listen(file, cb)` with the process umask at 0177 while the socket is made, so it is 0600
 * before anyone can connect. The bind happens inside listen() itself, so the umask is restored as
 * soon as it returns: restoring it in the callback instead left a window in which two overlapping
 * listens (a sandbox's relays start together) could leave coved's umask at 0177 for good, and every
 * folder it made after that 0600 (passt, which drops its capabilities, then cannot bind in it).
 */
export function listenUnderUmask(server: net.Server, file: string, cb: () => void): void {
  const old = process.umask(0o177);
  try {
    server.listen(file, cb);
  } finally {
    process.umask(old);
  }
}

/** Listens on the unix socket `file` (mode 0600, replacing a stale socket file). */
export async function listenPrivate(server: net.Server, file: string): Promise<void> {
  try {
    fs.unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    listenUnderUmask(server, file, () => {
      server.off('error', reject);
      resolve();
    });
  });
  fs.chmodSync(file, 0o600);
}

/** Listens on `opts.path` (mode 0600, replacing a stale socket file). */
export async function startRelay(opts: RelayOptions): Promise<net.Server> {
  const server = closingServer(net.createServer({ allowHalfOpen: true }, (conn) => {
    conn.on('error', () => conn.destroy());
    opts.open().then(
      (ch) => {
        if (conn.destroyed) {
          ch.destroy();
          return;
        }
        pipeBothWays(conn, ch);
      },
      (err: unknown) => opts.unavailable(conn, err instanceof Error ? err : new Error(String(err))),
    );
  }));
  await listenPrivate(server, opts.path);
  server.on('error', (err) => opts.log(`relay ${opts.path}: ${err.message}`));
  return server;
}

/** Answers a Docker API client with an error it shows to the user (`Error response from daemon: …`). */
export function dockerUnavailable(conn: net.Socket, message: string): void {
  const body = JSON.stringify({ message });
  conn.end(
    'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nApi-Version: 1.45\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
