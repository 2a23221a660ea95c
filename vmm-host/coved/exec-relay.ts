// The sandbox's exec.sock: `cove exec` (without a terminal) speaks HTTP/2 here, and each of its
// streams, `exec` or `exec-stderr` (agent/PROTOCOL.md, "Exec streams"), is relayed to a stream of
// the same name on the data channel, headers, both bodies and the exit trailers included. The
// relay is HTTP/2 on both sides so that the trailers pass through as they are.
//
// When the VM has the stdin port (PROTOCOL.md, "The stdin port") and no other command holds it, the
// relay asks the agent to give the command the port as its stdin; if the agent's answer echoes the
// request, the client's body goes to qemu's stdin.sock instead of the data channel, behind a
// preamble, and reaches the command with no process in the guest copying it. A client that asks for
// it (`cove cp` from the guest: EXEC_STDOUT_PORT_HEADER) gets the port the other way round, as the
// command's stdout: the relay reads the port's socket up to the end marker and sends what came
// before it as the answer body, then the exit trailers. One command at a time has the port; the
// others use the data channel as before.
//
// A client told 503 uses SSH instead (the data channel is down, or the agent does not serve exec
// streams): nothing has run in the guest then. Any other refusal is an error to show.
import { randomBytes } from 'node:crypto';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { DATA_SETTINGS, refusalHeaders } from '../../contract/data-channel';
import {
  EXEC_EXIT_TRAILER,
  EXEC_ID_HEADER,
  EXEC_REQUEST_HEADER,
  EXEC_SIGNAL_TRAILER,
  EXEC_STDERR_TARGET,
  EXEC_STDIN_PORT_HEADER,
  EXEC_STDOUT_PORT_END_MS,
  EXEC_STDOUT_PORT_HEADER,
  EXEC_STDOUT_PORT_WANTED,
  EXEC_TARGET,
} from '../../contract/exec-stream';
import type { OpenedStream } from './data-link';
import { closingServer, listenPrivate } from './relay';
import { StdinPortLease, closed, stdinPortSink } from './stdin-port';

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_STATUS, HTTP2_METHOD_CONNECT, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

/** The status that tells the client to use SSH for this command. */
export const EXEC_USE_SSH_STATUS = 503;

export interface ExecRelayOptions {
  path: string;
  log: (msg: string) => void;
  /** Opens the guest's stream; `useSsh` in the rejection says the client should fall back. */
  open: (authority: string, headers: http2.OutgoingHttpHeaders) => Promise<OpenedStream>;
  /** Whether an open's failure means "use SSH" rather than an error to show. */
  useSsh: (err: unknown) => boolean;
  /**
   * qemu's end of the stdin port (VM.stdinSock). `open` drops the request for it when the running
   * VM has no such port.
   */
  stdinSock?: string;
  /** Who holds the stdin port (shared with the Docker socket's uploads); a relay of its own when not given. */
  lease?: StdinPortLease;
}

function refuse(stream: http2.ServerHttp2Stream, status: number, message: string): void {
  if (stream.destroyed || stream.headersSent) return;
  stream.respond(refusalHeaders(status, message), { endStream: true });
}

/** Only the exit trailers pass: a guest does not get to send the host client anything else. */
function exitTrailers(t: http2.IncomingHttpHeaders | null): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const k of [EXEC_EXIT_TRAILER, EXEC_SIGNAL_TRAILER]) {
    const v = t?.[k];
    if (typeof v === 'string' && /^[A-Za-z0-9]{1,16}$/.test(v)) out[k] = v;
  }
  return out;
}

/**
 * The command's stdout on the stdin port: qemu's socket, the preamble written first, then read up to
 * the end marker (the nonce again), which is not passed on. Never half-closed: qemu would take our
 * EOF for a hang-up and drop what the guest writes after it.
 */
function stdoutPortSource(sockPath: string, nonce: string, log: (msg: string) => void): { sock: net.Socket; scan: (chunk: Buffer) => { data: Buffer; ended: boolean } } {
  const sock = net.connect({ path: sockPath, allowHalfOpen: true });
  sock.write(nonce, 'latin1');
  sock.on('error', (err) => log(`exec.sock: the stdin port as stdout: ${err.message}`));
  const marker = Buffer.from(nonce, 'latin1');
  let held = Buffer.alloc(0);
  // The last marker.length - 1 bytes of what came are held back: the marker may span two reads.
  const scan = (chunk: Buffer) => {
    const buf = held.length ? Buffer.concat([held, chunk]) : chunk;
    const at = buf.indexOf(marker);
    if (at >= 0) {
      held = Buffer.alloc(0);
      return { data: buf.subarray(0, at), ended: true };
    }
    const keep = Math.min(buf.length, marker.length - 1);
    held = Buffer.from(buf.subarray(buf.length - keep));
    return { data: buf.subarray(0, buf.length - keep), ended: false };
  };
  return { sock, scan };
}

function relayStream(client: http2.ServerHttp2Stream, opened: OpenedStream, withTrailers: boolean, stdinSink: net.Socket | null, stdoutSource: ReturnType<typeof stdoutPortSource> | null = null): void {
  const up = opened.stream;
  client.respond({ [HTTP2_HEADER_STATUS]: 200 }, { waitForTrailers: withTrailers });
  // Asked for once the guest's answer has ended, so its trailers are in by then.
  if (withTrailers) client.on('wantTrailers', () => client.sendTrailers(exitTrailers(opened.trailers())));
  if (stdinSink) {
    // The client's EOF shuts down the sink's write side (it is half-open): qemu then reads every
    // byte before it sees the end and disconnects (a full close would drop what it had not read).
    client.pipe(stdinSink);
    up.end(); // The agent reads stdin from the port; this body stays empty.
  } else {
    client.pipe(up);
  }
  if (stdoutSource) relayStdoutPort(client, up, stdoutSource);
  else up.pipe(client);
  const reset = (s: http2.Http2Stream) => {
    if (!s.destroyed) s.close(NGHTTP2_CANCEL);
  };
  // A reset on either side resets the other: a client that left hangs up the command, and a guest
  // stream that broke ends the client's without an exit status, which it reports as such.
  client.on('close', () => {
    if (client.rstCode !== NGHTTP2_NO_ERROR || !up.readableEnded) {
      reset(up);
      stdinSink?.destroy();
    }
  });
  up.on('close', () => {
    // The command has ended: stdin it did not read is dropped.
    stdinSink?.destroy();
    if (up.rstCode !== NGHTTP2_NO_ERROR && !client.writableFinished) reset(client);
  });
  // A stdin port lost midway: the command must not take a cut stdin for its end.
  stdinSink?.on('error', () => {
    reset(up);
    reset(client);
  });
  client.on('error', () => undefined);
  up.on('error', () => undefined);
}

/**
 * The answer body from the stdout port: the port's bytes up to the end marker. The client's stream
 * ends once both the marker and the guest's answer (its exit trailers) are in; a port that closes
 * before its marker, or a marker that does not come within EXEC_STDOUT_PORT_END_MS of the exit
 * status, resets it, so the client reports a cut stdout instead of taking it for the whole.
 */
function relayStdoutPort(client: http2.ServerHttp2Stream, up: http2.ClientHttp2Stream, source: ReturnType<typeof stdoutPortSource>): void {
  const { sock, scan } = source;
  let markerSeen = false;
  let upEnded = false;
  let timer: NodeJS.Timeout | null = null;
  const fail = () => {
    if (timer) clearTimeout(timer);
    sock.destroy();
    if (!up.destroyed) up.close(NGHTTP2_CANCEL);
    if (!client.destroyed) client.close(NGHTTP2_CANCEL);
  };
  const finish = () => {
    if (!markerSeen || !upEnded) return;
    if (timer) clearTimeout(timer);
    client.end();
  };
  sock.on('data', (chunk: Buffer) => {
    if (markerSeen) return; // After the marker: a leftover process's bytes, for nobody.
    const { data, ended } = scan(chunk);
    if (data.length > 0 && !client.write(data)) {
      sock.pause();
      client.once('drain', () => sock.resume());
    }
    if (ended) {
      markerSeen = true;
      sock.destroy();
      finish();
    }
  });
  // The socket is half-open (never half-closed by us), so qemu's hang-up comes as 'end' first.
  const cut = () => {
    if (!markerSeen) fail();
  };
  sock.on('end', cut);
  sock.on('close', cut);
  // A client that went away: the port's socket goes too (the agent hangs the command up).
  client.on('close', () => sock.destroy());
  up.resume(); // The command's stdout is on the port; this body stays empty.
  up.on('end', () => {
    upEnded = true;
    if (!markerSeen) timer = setTimeout(fail, EXEC_STDOUT_PORT_END_MS);
    finish();
  });
}

export async function startExecRelay(opts: ExecRelayOptions): Promise<net.Server> {
  const h2 = http2.createServer({ settings: DATA_SETTINGS, maxSessionMemory: 256 });
  const lease = opts.lease ?? new StdinPortLease();
  h2.on('session', (session: http2.ServerHttp2Session) => session.on('error', (err: Error) => opts.log(`exec.sock: session error: ${err.message}`)));
  h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    stream.on('error', () => undefined);
    const authority = headers[HTTP2_HEADER_AUTHORITY];
    if (headers[HTTP2_HEADER_METHOD] !== HTTP2_METHOD_CONNECT || (authority !== EXEC_TARGET && authority !== EXEC_STDERR_TARGET)) {
      refuse(stream, 400, `only CONNECT to ${EXEC_TARGET} or ${EXEC_STDERR_TARGET}`);
      return;
    }
    const pass: http2.OutgoingHttpHeaders = {};
    for (const k of [EXEC_REQUEST_HEADER, EXEC_ID_HEADER]) {
      const v = headers[k];
      if (typeof v === 'string') pass[k] = v;
    }
    // The stdin port, if free: held from the ask until both its socket and the command have ended.
    // As stdin unless the client asked for it as stdout.
    const nonce = authority === EXEC_TARGET && opts.stdinSock && lease.take() ? randomBytes(16).toString('hex') : null;
    const portHeader = headers[EXEC_STDOUT_PORT_HEADER] === EXEC_STDOUT_PORT_WANTED ? EXEC_STDOUT_PORT_HEADER : EXEC_STDIN_PORT_HEADER;
    if (nonce) pass[portHeader] = nonce;
    opts.open(authority, pass).then(
      (opened) => {
        const taken = nonce !== null && opened.headers[portHeader] === nonce;
        // The agent took the port and waits for its preamble; a reset stream ends that wait.
        const connect = taken && opts.stdinSock && !stream.destroyed ? { path: opts.stdinSock, nonce } : null;
        const sink = connect && portHeader === EXEC_STDIN_PORT_HEADER ? stdinPortSink(connect.path, connect.nonce, opts.log, 'exec.sock') : null;
        const source = connect && portHeader === EXEC_STDOUT_PORT_HEADER ? stdoutPortSource(connect.path, connect.nonce, opts.log) : null;
        const sock = sink ?? source?.sock ?? null;
        if (taken) void Promise.all([opened.stream, ...(sock ? [sock] : [])].map(closed)).then(() => lease.release());
        else if (nonce) lease.release();
        if (stream.destroyed) {
          opened.stream.close(NGHTTP2_CANCEL);
          sock?.destroy();
          return;
        }
        relayStream(stream, opened, authority === EXEC_TARGET, sink, source);
      },
      (err: unknown) => {
        if (nonce) lease.release();
        const message = err instanceof Error ? err.message : String(err);
        if (opts.useSsh(err)) refuse(stream, EXEC_USE_SSH_STATUS, message);
        else {
          opts.log(`exec.sock: ${message}`);
          refuse(stream, 502, message);
        }
      },
    );
  });
  const server = closingServer(net.createServer((sock) => h2.emit('connection', sock)));
  await listenPrivate(server, opts.path);
  return server;
}
