// JSON-RPC 2.0 over WebSocket: one text frame is one JSON-RPC message. vscode-jsonrpc does the
// JSON-RPC semantics (ids, errors, cancellation, unknown methods); this file only moves frames and
// answers frames that are not JSON-RPC at all, which vscode-jsonrpc never sees.
import WebSocket from 'ws';
import {
  AbstractMessageReader,
  AbstractMessageWriter,
  createMessageConnection,
  type DataCallback,
  type Disposable,
  type Message,
  type MessageConnection,
} from 'vscode-jsonrpc/node';

/** JSON-RPC's own error codes for frames that never reach a handler. */
const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;

/** What is wrong with a frame, or null when it is a JSON-RPC 2.0 message this side can dispatch. */
export function frameProblem(value: unknown): string | null {
  if (Array.isArray(value)) return 'batch requests are not supported: send one request per frame';
  if (value === null || typeof value !== 'object') return 'a JSON-RPC message must be a JSON object';
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== '2.0') return 'the "jsonrpc" member must be exactly "2.0"';
  if ('id' in m && m.id !== null && typeof m.id !== 'string' && !(typeof m.id === 'number' && Number.isFinite(m.id))) {
    return 'the "id" member must be a string, a number or null';
  }
  if ('method' in m) {
    if (typeof m.method !== 'string' || m.method === '') return 'the "method" member must be a non-empty string';
    if ('params' in m && (m.params === null || typeof m.params !== 'object')) return 'the "params" member must be an object or an array';
    return null;
  }
  if ('result' in m || 'error' in m) return 'id' in m ? null : 'a response needs an "id"';
  return 'a JSON-RPC message needs a "method" (request) or a "result"/"error" (response)';
}

class WebSocketReader extends AbstractMessageReader {
  private callback: DataCallback | null = null;
  private readonly pending: Message[] = [];

  constructor(private readonly ws: WebSocket) {
    super();
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', () => this.fireClose());
    ws.on('error', (err) => this.fireError(err));
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    for (const m of this.pending.splice(0)) callback(m);
    return { dispose: () => (this.callback = null) };
  }

  private onFrame(data: WebSocket.RawData, isBinary: boolean): void {
    if (isBinary) return this.reject(null, INVALID_REQUEST, 'binary frames are not accepted: send JSON text frames');
    let value: unknown;
    try {
      value = JSON.parse(frameText(data));
    } catch (e) {
      return this.reject(null, PARSE_ERROR, `the frame is not valid JSON (${(e as Error).message})`);
    }
    const problem = frameProblem(value);
    if (problem !== null) {
      const id = (value as { id?: unknown } | null)?.id;
      return this.reject(typeof id === 'string' || typeof id === 'number' ? id : null, INVALID_REQUEST, problem);
    }
    const message = value as Message;
    if (this.callback) this.callback(message);
    else this.pending.push(message);
  }

  private reject(id: string | number | null, code: number, message: string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } }));
  }
}

class WebSocketWriter extends AbstractMessageWriter {
  constructor(
    private readonly ws: WebSocket,
    private readonly maxBuffered: number,
  ) {
    super();
    ws.on('close', () => this.fireClose());
  }

  write(msg: Message): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('the connection is closed'));
    // A peer that never reads must not make this process hold its output forever.
    if (this.ws.bufferedAmount > this.maxBuffered) {
      this.ws.terminate();
      return Promise.reject(new Error('the peer does not read its messages; connection closed'));
    }
    return new Promise((resolve, reject) => this.ws.send(JSON.stringify(msg), (err) => (err ? reject(err) : resolve())));
  }

  end(): void {
    this.ws.close();
  }
}

/** Wraps an open WebSocket as a vscode-jsonrpc connection (not yet listening). */
export function connectionForSocket(ws: WebSocket, opts: { maxBuffered?: number } = {}): MessageConnection {
  const reader = new WebSocketReader(ws);
  const writer = new WebSocketWriter(ws, opts.maxBuffered ?? 16 * 1024 * 1024);
  return createMessageConnection(reader, writer);
}

/** The text of a text frame: ws hands it over as one Buffer, or as fragments with some options. */
function frameText(data: WebSocket.RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return (Buffer.isBuffer(data) ? data : Buffer.from(data)).toString('utf8');
}
