// Puts Coved on the wire: a WebSocket server on $COVE_HOME/coved.sock (mode 0600), one
// vscode-jsonrpc connection per client, every request declared in contract/protocol.ts and handled per area in handlers/.
import * as fs from 'node:fs';
import * as http from 'node:http';
import { WebSocketServer } from 'ws';
import { ResponseError, type MessageConnection } from 'vscode-jsonrpc/node';
import { isCoveError, messageOf } from '../../contract/errors';
import { ErrorCodes, MAX_FRAME_BYTES, Notifications, PROTOCOL_VERSION, Requests, type ErrorData } from '../../contract/protocol';
import { connectionForSocket } from '../../contract/transport';
import type { Coved, Listener } from './coved';
import { doctor, plugins } from './handlers/doctor';
import * as images from './handlers/image';
import * as sandboxes from './handlers/sandbox';
import { isImageError } from '../image/errors';
import { isDriverError } from '../driver/errors';
import { listenUnderUmask } from './relay';

/** Turns anything thrown by a handler into a JSON-RPC error a client can show, keeping its code and hint. */
export function toResponseError(e: unknown): ResponseError<ErrorData> {
  // Already a JSON-RPC error (invalid params, say): its code is the answer.
  if (e instanceof ResponseError) return e as ResponseError<ErrorData>;
  if (isCoveError(e)) return new ResponseError<ErrorData>(e.code, e.message, { hint: e.hint, consoleTail: e.consoleTail });
  // Before the image errors: isImageError takes any error that carries a hint.
  if (isDriverError(e)) return new ResponseError<ErrorData>(ErrorCodes.boot, e.message, { hint: e.hint });
  if (isImageError(e)) {
    const code = e.name === 'MissingToolError' ? ErrorCodes.missingTool : e.name === 'DiskFullError' ? ErrorCodes.noSpace : ErrorCodes.imageBuild;
    return new ResponseError<ErrorData>(code, e.message, { hint: e.hint });
  }
  return new ResponseError<ErrorData>(ErrorCodes.internal, messageOf(e), { hint: 'see coved.log in $COVE_HOME' });
}

/**
 * After an uncaught exception coved's state is unknown: logs it, runs `cleanup` (release the pid
 * lock, remove the socket) and exits 70, so the next client starts a fresh coved. The VMs are
 * separate processes and keep running; the new coved re-attaches to them.
 */
export function exitOnUncaught(log: (msg: string) => void, cleanup: () => void): void {
  process.on('uncaughtException', (e) => {
    log(`uncaught exception, exiting: ${e instanceof Error ? (e.stack ?? e.message) : messageOf(e)}`);
    try {
      cleanup();
    } finally {
      process.exit(70);
    }
  });
}

function handle<T>(fn: () => Promise<T> | T): Promise<T> {
  return Promise.resolve()
    .then(fn)
    .catch((e: unknown) => {
      throw toResponseError(e);
    });
}

function register(conn: MessageConnection, coved: Coved, version: string, onShutdown: () => void): Listener {
  conn.onRequest(Requests.version, () => ({ version, protocol: PROTOCOL_VERSION, pid: process.pid, home: coved.home }));
  conn.onRequest(Requests.doctor, () => handle(() => doctor(coved)));
  conn.onRequest(Requests.up, (p) => handle(() => sandboxes.up(coved, p)));
  conn.onRequest(Requests.list, () => handle(() => sandboxes.list(coved)));
  conn.onRequest(Requests.inspect, (p) => handle(() => sandboxes.inspect(coved, p)));
  conn.onRequest(Requests.start, (p) => handle(() => sandboxes.start(coved, p)));
  conn.onRequest(Requests.stop, (p) => handle(() => sandboxes.stop(coved, p)));
  conn.onRequest(Requests.sleep, (p) => handle(() => sandboxes.sleep(coved, p)));
  conn.onRequest(Requests.pause, (p) => handle(() => sandboxes.pause(coved, p)));
  conn.onRequest(Requests.remove, (p) => handle(() => sandboxes.remove(coved, p)));
  conn.onRequest(Requests.publish, (p) => handle(() => sandboxes.publish(coved, p)));
  conn.onRequest(Requests.unpublish, (p) => handle(() => sandboxes.unpublish(coved, p)));
  conn.onRequest(Requests.imageBuild, (p) =>
    handle(() => {
      // JSON-RPC params may be absent whatever the declared type says.
      const params = p as { force?: unknown; progressToken?: unknown } | null | undefined;
      const { force, progressToken } = params ?? {};
      if (force !== undefined && typeof force !== 'boolean') throw new ResponseError(-32602, '"force" must be true or false');
      if (progressToken !== undefined && typeof progressToken !== 'string') throw new ResponseError(-32602, '"progressToken" must be a string');
      // The token is echoed in this build's progress events, as `up` does (defect #8: it was dropped).
      return images.build(coved, force === true, progressToken);
    }),
  );
  conn.onRequest(Requests.plugins, (p) => handle(() => plugins(coved, p)));
  conn.onRequest(Requests.imageList, () => handle(() => images.list(coved)));
  conn.onRequest(Requests.imagePrune, () => handle(() => images.prune(coved)));
  conn.onRequest(Requests.shutdown, () => {
    setImmediate(onShutdown);
  });
  const send = (type: { method: string }, params: unknown) => {
    conn.sendNotification(type.method, params).catch(() => undefined);
  };
  return {
    progress: (e) => send(Notifications.progress, e),
    sandboxChanged: (sandbox) => send(Notifications.sandboxChanged, { sandbox }),
    sandboxRemoved: (name) => send(Notifications.sandboxRemoved, { name }),
    port: (name, port, action) => send(Notifications.port, { name, port, action }),
  };
}

export async function serve(coved: Coved, sockPath: string, version: string, onShutdown: () => void): Promise<() => Promise<void>> {
  fs.rmSync(sockPath, { force: true });
  const httpServer = http.createServer((_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain' });
    res.end('coved speaks JSON-RPC 2.0 over WebSocket on this socket\n');
  });
  const wss = new WebSocketServer({ server: httpServer, maxPayload: MAX_FRAME_BYTES });
  wss.on('connection', (ws) => {
    const conn = connectionForSocket(ws);
    const listener = register(conn, coved, version, onShutdown);
    coved.listeners.add(listener);
    ws.on('close', () => {
      coved.listeners.delete(listener);
      conn.dispose();
    });
    ws.on('error', () => ws.terminate());
    conn.onError(() => undefined);
    conn.listen();
  });
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    listenUnderUmask(httpServer, sockPath, resolve);
  });
  fs.chmodSync(sockPath, 0o600);
  return async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
    await new Promise<void>((r) => httpServer.close(() => r()));
    fs.rmSync(sockPath, { force: true });
  };
}
