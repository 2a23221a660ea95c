// Exec streams on the data channel (PROTOCOL.md, "Exec streams"): a command's stdin and stdout are
// one HTTP/2 stream's two bodies and its stderr a second stream's answer, so the bytes go from
// nghttp2 to the child's pipes with no SSH framing or cipher in between. The exit status is the
// `exec` stream's trailers. Semantics follow an SSH `exec` without a pty (session.ts): /bin/sh -c,
// the same environment and working directory, and when the host goes the command loses its pipes
// but is not signalled.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import {
  decodeExecRequest,
  EXEC_EXIT_TRAILER,
  EXEC_ID_HEADER,
  EXEC_ID_RE,
  EXEC_REQUEST_HEADER,
  EXEC_SIGNAL_TRAILER,
  EXEC_STDERR_WAIT_MS,
  type ExecRequest,
} from '../contract/exec-stream';
import { CWD_ENV } from '../contract/guest';
import { errorText, log } from './log';
import { buildEnv, currentUser, cwdFrom } from './session';
import { respondError } from './stream-error';

const { HTTP2_HEADER_STATUS } = http2.constants;

let execCount = 0;

interface Parked {
  stream: http2.ServerHttp2Stream;
  timer: NodeJS.Timeout;
}

export class ExecStreams {
  /** `exec-stderr` streams waiting for their `exec`, by id. */
  private readonly parked = new Map<string, Parked>();

  /** `exec` streams whose `exec-stderr` has not arrived yet (the host may send them in any order), by id. */
  private readonly waiting = new Map<string, (errStream: http2.ServerHttp2Stream) => void>();

  /** An `exec-stderr` stream: answered at once, then held until the `exec` with its id arrives. */
  parkStderr(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const id = headers[EXEC_ID_HEADER];
    if (typeof id !== 'string' || !EXEC_ID_RE.test(id)) return respondError(stream, 400, `exec-stderr needs a ${EXEC_ID_HEADER} header of 32 lowercase hex digits`);
    if (this.parked.has(id)) return respondError(stream, 400, `an exec-stderr stream with id ${id} is already waiting`);
    stream.respond({ [HTTP2_HEADER_STATUS]: 200 });
    stream.resume(); // Its request body carries nothing; an early END_STREAM is fine.
    const exec = this.waiting.get(id);
    if (exec) {
      this.waiting.delete(id);
      exec(stream);
      return;
    }
    const timer = setTimeout(() => {
      this.parked.delete(id);
      log(`data: exec-stderr ${id} had no exec within ${EXEC_STDERR_WAIT_MS / 1000} s; closed`);
      stream.end();
    }, EXEC_STDERR_WAIT_MS);
    this.parked.set(id, { stream, timer });
    stream.once('close', () => {
      if (this.parked.get(id)?.stream !== stream) return;
      clearTimeout(timer);
      this.parked.delete(id);
    });
  }

  /** An `exec` stream: runs the command with the stream as its stdin and stdout. */
  run(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    const req = decodeExecRequest(headers[EXEC_REQUEST_HEADER]);
    if (typeof req === 'string') return respondError(stream, 400, req);
    const id = headers[EXEC_ID_HEADER];
    if (id === undefined) return this.start(stream, req, null);
    if (typeof id !== 'string' || !EXEC_ID_RE.test(id)) return respondError(stream, 400, `the ${EXEC_ID_HEADER} header is not 32 lowercase hex digits`);
    const p = this.parked.get(id);
    if (p) {
      clearTimeout(p.timer);
      this.parked.delete(id);
      if (!p.stream.destroyed) return this.start(stream, req, p.stream);
    }
    if (this.waiting.has(id)) return respondError(stream, 400, `an exec with id ${id} is already waiting for its exec-stderr`);
    const timer = setTimeout(() => {
      this.waiting.delete(id);
      respondError(stream, 400, `no exec-stderr stream with id ${id} arrived within ${EXEC_STDERR_WAIT_MS / 1000} s`);
    }, EXEC_STDERR_WAIT_MS);
    this.waiting.set(id, (errStream) => {
      clearTimeout(timer);
      if (stream.destroyed) errStream.close(http2.constants.NGHTTP2_CANCEL);
      else this.start(stream, req, errStream);
    });
    stream.once('close', () => {
      if (!this.waiting.has(id)) return;
      clearTimeout(timer);
      this.waiting.delete(id);
    });
  }

  /** Runs the command: the stream is its stdin and stdout, errStream (or the stream) its stderr. */
  private start(stream: http2.ServerHttp2Stream, req: ExecRequest, errStream: http2.ServerHttp2Stream | null): void {
    const id = `exec#${++execCount}`;
    const user = currentUser();
    const env = buildEnv(req.env, user);
    let cwd = cwdFrom(req.cwd !== undefined ? { [CWD_ENV]: req.cwd } : {});
    const stderr = errStream ?? stream;
    if (!fs.existsSync(cwd)) {
      stderr.write(Buffer.from(`cove-agent: working directory ${cwd} does not exist; using /\n`));
      cwd = '/';
    }
    const child = spawn('/bin/sh', ['-c', req.command], { cwd, env, stdio: 'pipe', detached: true });
    stream.respond({ [HTTP2_HEADER_STATUS]: 200 }, { waitForTrailers: true });
    let exited = false;
    let trailers: Record<string, string> = { [EXEC_EXIT_TRAILER]: '127' };
    stream.on('wantTrailers', () => stream.sendTrailers(trailers));

    child.stdout.pipe(stream, { end: false });
    // Without a stderr stream (a client that did not ask for one) stderr joins stdout.
    child.stderr.pipe(stderr, { end: false });
    stream.pipe(child.stdin);
    let inBytes = 0;
    let inChunks = 0;
    stream.on('data', (d: Buffer) => {
      inBytes += d.length;
      inChunks++;
    });
    child.stdin.on('error', () => undefined); // EPIPE when the process exits before reading stdin.
    // Once the command stops reading, what the host still sends is dropped, so its window never fills.
    child.stdin.once('close', () => {
      stream.unpipe(child.stdin);
      stream.resume();
    });

    child.on('error', (err) => {
      log(`${id}: cannot start: ${errorText(err)}`);
      if (!stderr.destroyed) stderr.write(Buffer.from(`cove-agent: ${errorText(err)}\n`));
    });
    child.on('close', (code, signal) => {
      exited = true;
      if (signal) {
        trailers = { [EXEC_SIGNAL_TRAILER]: signal.replace(/^SIG/, '') };
        log(`${id}: killed by ${signal}`);
      } else {
        // A command that could not start reports a negative errno; 127 is the shell's "not found".
        trailers = { [EXEC_EXIT_TRAILER]: String(code !== null && code >= 0 ? code : 127) };
        log(`${id}: exited ${code} (stdin: ${inBytes} bytes in ${inChunks} chunks)`);
      }
      // stderr ends first, so the host has all of it when the exit status arrives.
      if (errStream && !errStream.destroyed) errStream.end();
      if (!stream.destroyed) stream.end();
    });

    const hangup = (): void => {
      // As an SSH exec without a pty when its connection goes: the command loses its pipes.
      if (exited) return;
      child.stdin.destroy();
      child.stdout.destroy();
      child.stderr.destroy();
    };
    stream.once('close', hangup);
    if (errStream) {
      errStream.once('close', () => {
        // A stderr stream reset by the host: stderr's bytes have nowhere to go, so they are dropped.
        if (!exited && errStream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) child.stderr.unpipe().resume();
      });
      errStream.on('error', () => undefined);
    }
    stream.on('error', () => undefined);
  }
}
