// The data channel's service (PROTOCOL.md, "The data channel"): HTTP/2 (Node's http2, nghttp2
// underneath: framing and flow control in native code), one CONNECT stream per host connection, to
// dockerd's socket, the agent's own SSH socket or a guest TCP address, or a command's stdio
// (exec-stream.ts), and nothing else. Each stream is bridged to its socket with
// half-close both ways, as the SSH channels are (forward.ts): the host's END_STREAM shuts down the
// socket's write side and the answer keeps flowing; the socket's EOF becomes END_STREAM and the host
// may keep sending. A socket error resets the stream (RST_STREAM CANCEL), and a reset stream
// destroys its socket.
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { DATA_CONNECTION_WINDOW, DATA_SETTINGS, parseDataTarget, type DataTarget } from '../contract/data-channel';
import { EXEC_STDERR_TARGET, EXEC_TARGET } from '../contract/exec-stream';
import { serveDockerUpload } from './docker-upload';
import { ExecStreams } from './exec-stream';
import { errorText, log } from './log';
import type { StdinPort } from './stdin-port';
import { answerOnStream, onceConnected } from './stream-answer';
import { respondError } from './stream-error';

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_STATUS, HTTP2_METHOD_CONNECT } = http2.constants;

let streamCount = 0;

export class MuxServer {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly exec: ExecStreams;

  constructor(
    private readonly dockerSock: string,
    /** The agent's own SSH socket, or null when it has none. */
    private readonly agentSock: string | null,
    /** The stdin port commands may take as their stdin, and large Docker uploads their request (null: none). */
    private readonly stdinPort: StdinPort | null = null,
    /** PATH for the `cat` of a Docker upload on the stdin port (docker-upload.ts). */
    private readonly systemPath = '/usr/sbin:/usr/bin:/sbin:/bin',
  ) {
    this.exec = new ExecStreams(stdinPort);
    this.server = http2.createServer({
      settings: DATA_SETTINGS,
      // Window-sized bursts of a few streams are queued here; nghttp2's default of 10 MB is too tight.
      maxSessionMemory: 256,
    });
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
      session.on('error', (err) => log(`data: session error: ${errorText(err)}`));
      session.on('connect', () => session.setLocalWindowSize(DATA_CONNECTION_WINDOW));
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
  }

  /** Serves one host session on a byte stream (the data port's connection). */
  serve(stream: Duplex, label: string): void {
    (stream as Duplex & { label?: string }).label = label;
    this.server.emit('connection', stream);
  }

  endAll(): void {
    for (const s of this.sessions) s.close();
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const given = headers[HTTP2_HEADER_AUTHORITY];
    const authority = typeof given === 'string' ? given : '';
    const connect = headers[HTTP2_HEADER_METHOD] === HTTP2_METHOD_CONNECT;
    if (connect && authority === EXEC_STDERR_TARGET) return this.exec.parkStderr(stream, headers);
    if (connect && authority === EXEC_TARGET) return this.exec.run(stream, headers);
    const target = connect ? parseDataTarget(authority) : null;
    if (!target || (target.kind === 'agent' && !this.agentSock)) {
      log(`data: refused ${String(headers[HTTP2_HEADER_METHOD])} ${JSON.stringify(authority)}: only CONNECT to docker.sock, agent.sock, exec, exec-stderr or IP:port`);
      respondError(stream, 400, 'only CONNECT to docker.sock, agent.sock, exec, exec-stderr or an IP address and port');
      return;
    }
    const id = ++streamCount;
    const what = target.kind === 'tcp' ? `tcp ${authority} #${id}` : `${authority} #${id}`;
    if (target.kind === 'docker' && serveDockerUpload(stream, headers, this.dockerSock, this.stdinPort, this.systemPath, what)) return;
    const socket = connectTarget(target, this.dockerSock, this.agentSock ?? '');
    onceConnected(stream, socket, what, () => {
      stream.respond({ [HTTP2_HEADER_STATUS]: 200 });
      bridgeStream(stream, socket);
    });
  }
}

function connectTarget(target: DataTarget, dockerSock: string, agentSock: string): net.Socket {
  if (target.kind === 'docker') return net.connect({ path: dockerSock, allowHalfOpen: true });
  if (target.kind === 'agent') return net.connect({ path: agentSock, allowHalfOpen: true });
  return net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
}

/** Pipes an HTTP/2 stream and a socket both ways with half-close (see the top of this file). */
export function bridgeStream(stream: http2.Http2Stream, socket: net.Socket): void {
  stream.pipe(socket, { end: false });
  stream.on('end', () => socket.end());
  answerOnStream(socket, stream);
  stream.on('close', () => {
    // A stream that ended with both END_STREAMs leaves the socket to finish its writes; a reset one
    // takes the socket with it.
    if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR || !stream.readableEnded) socket.destroy();
  });
}
