// `cove exec` without a terminal over exec streams (agent/PROTOCOL.md, "Exec streams"): HTTP/2 to
// the sandbox's exec.sock, which coved relays to the data channel. Returns null, having run
// nothing, when the command should go over SSH instead: no exec.sock (an older coved), the data
// channel down, or an agent that does not serve exec streams.
import { randomBytes } from 'node:crypto';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { DATA_ERROR_HEADER, DATA_SETTINGS } from '../../contract/data-channel';
import { encodeExecRequest, EXEC_ID_HEADER, EXEC_REQUEST_HEADER, EXEC_STDERR_TARGET, EXEC_STDOUT_PORT_HEADER, EXEC_STDOUT_PORT_WANTED, EXEC_TARGET, exitCodeOf, type ExecRequest } from '../../contract/exec-stream';
import { CoveError } from '../../contract/errors';
import { ErrorCodes } from '../../contract/protocol';

const { HTTP2_HEADER_METHOD, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_STATUS, HTTP2_METHOD_CONNECT, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

/** The status coved answers when the command should go over SSH (coved/exec-relay.ts). */
const USE_SSH_STATUS = 503;
/** How long coved and the guest may take to answer the two opens (a sleeping sandbox wakes first). */
const OPEN_TIMEOUT_MS = 180_000;

/** What `cove exec` says when the command's exit status never came, over either path. */
export const LOST_EXIT_STATUS = 'cove: the connection to the sandbox closed before the command reported its exit status; `cove logs` and coved.log in $COVE_HOME say why\n';

/** `COVE_EXEC_TRANSPORT=ssh` sends every `cove exec` over SSH (to compare, or to rule exec streams out). */
export function execStreamsEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.COVE_EXEC_TRANSPORT ?? '').trim().toLowerCase() !== 'ssh';
}

export interface ExecStdio {
  stdin: Readable | null;
  stdout: Writable;
  stderr: Writable;
}

function connect(sockPath: string): Promise<http2.ClientHttp2Session | null> {
  return new Promise((resolve) => {
    const sock = net.connect(sockPath);
    sock.once('error', () => resolve(null)); // No exec.sock: an older coved, or a sandbox coved does not serve.
    sock.once('connect', () => {
      const session = http2.connect('http://cove.exec', { createConnection: () => sock, settings: DATA_SETTINGS, maxSessionMemory: 256 });
      session.on('error', () => undefined); // Seen on the streams.
      resolve(session);
    });
  });
}

/** Waits for a stream's answer: the stream when 200, null for "use SSH", or throws the refusal. */
function answered(stream: http2.ClientHttp2Stream, what: string): Promise<http2.ClientHttp2Stream | null> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.destroy();
      reject(new CoveError(ErrorCodes.conflict, `the sandbox did not answer ${what} within ${OPEN_TIMEOUT_MS / 1000} s`, 'see `cove logs` and coved.log in $COVE_HOME'));
    }, OPEN_TIMEOUT_MS);
    stream.once('response', (headers) => {
      clearTimeout(timer);
      const status = Number(headers[HTTP2_HEADER_STATUS]);
      if (status === 200) return resolve(stream);
      stream.destroy();
      if (status === USE_SSH_STATUS || status === 400) return resolve(null);
      const why = headers[DATA_ERROR_HEADER];
      reject(new CoveError(ErrorCodes.conflict, typeof why === 'string' ? why : `coved refused ${what} (status ${status})`, 'see `cove ls`'));
    });
    stream.once('close', () => {
      clearTimeout(timer);
      resolve(null); // Closed before an answer: coved went away; SSH will say what is wrong.
    });
    stream.on('error', () => undefined);
  });
}

/**
 * Runs `req` in the sandbox behind `sockPath`; resolves with the exit code to use (128+n for a
 * signal), or null when SSH should run it instead (nothing has run in the guest then). With
 * `stdoutPort`, asks coved for the stdin port as the command's stdout (for bulk output: `cove cp`
 * from the guest); coved gives it when it is free.
 */
export async function execOverStreams(sockPath: string, req: ExecRequest, stdio: ExecStdio, opts: { stdoutPort?: boolean } = {}): Promise<number | null> {
  const session = await connect(sockPath);
  if (!session) return null;
  try {
    const id = randomBytes(16).toString('hex');
    const errReq = session.request({ [HTTP2_HEADER_METHOD]: HTTP2_METHOD_CONNECT, [HTTP2_HEADER_AUTHORITY]: EXEC_STDERR_TARGET, [EXEC_ID_HEADER]: id });
    const exReq = session.request({
      [HTTP2_HEADER_METHOD]: HTTP2_METHOD_CONNECT,
      [HTTP2_HEADER_AUTHORITY]: EXEC_TARGET,
      [EXEC_REQUEST_HEADER]: encodeExecRequest(req),
      [EXEC_ID_HEADER]: id,
      ...(opts.stdoutPort ? { [EXEC_STDOUT_PORT_HEADER]: EXEC_STDOUT_PORT_WANTED } : {}),
    });
    errReq.end();
    // Caught from the start: a short command's trailers can come in the same read as its answer.
    let trailers: http2.IncomingHttpHeaders | null = null;
    exReq.once('trailers', (t: http2.IncomingHttpHeaders) => (trailers = t));
    let errStream: http2.ClientHttp2Stream | null;
    let exStream: http2.ClientHttp2Stream | null;
    try {
      [errStream, exStream] = await Promise.all([answered(errReq, 'the stderr stream'), answered(exReq, 'the command')]);
    } catch (e) {
      errReq.destroy();
      exReq.destroy();
      throw e;
    }
    if (exStream && !errStream) {
      // The command was accepted but its stderr stream went: never run it a second time over SSH.
      exReq.close(NGHTTP2_CANCEL);
      throw new CoveError(ErrorCodes.conflict, 'the sandbox accepted the command but its stderr stream closed; it may have started and was hung up', 'run it again; coved.log in $COVE_HOME says why');
    }
    if (!errStream || !exStream) {
      errReq.destroy();
      exReq.destroy();
      return null;
    }
    return await pump(errStream, exStream, stdio, () => trailers);
  } finally {
    session.close();
  }
}

function pump(errStream: http2.ClientHttp2Stream, exStream: http2.ClientHttp2Stream, stdio: ExecStdio, trailers: () => http2.IncomingHttpHeaders | null): Promise<number> {
  return new Promise((resolve) => {
    errStream.pipe(stdio.stderr, { end: false });
    exStream.pipe(stdio.stdout, { end: false });
    const { stdin } = stdio;
    if (stdin) stdin.pipe(exStream);
    else exStream.end();
    // The command's answer is complete: what stdin still holds is not wanted (an SSH exec likewise
    // stops reading stdin once the command has exited).
    exStream.once('end', () => {
      stdin?.unpipe(exStream);
      if (!exStream.writableFinished) exStream.close(NGHTTP2_NO_ERROR);
    });
    // A reader of our stdout or stderr that went away (`cove exec … | head`): as a local command
    // would, stop; the command in the guest loses its pipes (the agent hangs it up).
    let readerGone = false;
    const onWriteError = () => {
      readerGone = true;
      errStream.unpipe();
      exStream.unpipe();
      exStream.close(NGHTTP2_CANCEL);
      errStream.close(NGHTTP2_CANCEL);
    };
    stdio.stdout.on('error', onWriteError);
    stdio.stderr.on('error', onWriteError);
    let open = 2;
    const done = () => {
      if (--open > 0) return;
      stdin?.unpipe(exStream);
      stdio.stdout.off('error', onWriteError);
      stdio.stderr.off('error', onWriteError);
      const code = exitCodeOf(trailers());
      if (readerGone) return resolve(code ?? 128 + 13); // As a shell reports a command killed by SIGPIPE.
      if (code === null) {
        stdio.stderr.write(LOST_EXIT_STATUS);
      }
      resolve(code ?? 255);
    };
    errStream.once('close', done);
    exStream.once('close', done);
  });
}
