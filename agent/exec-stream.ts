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
  EXEC_STDIN_PORT_HEADER,
  EXEC_STDIN_PORT_WAIT_MS,
  EXEC_STDOUT_PORT_HEADER,
  type ExecRequest,
} from '../contract/exec-stream';
import { CWD_ENV } from '../contract/guest';
import { errorText, log } from './log';
import { buildEnv, currentUser, cwdFrom } from './session';
import { StdinPort, type OpenedStdinPort } from './stdin-port';
import { respondError } from './stream-error';

const { HTTP2_HEADER_STATUS } = http2.constants;

let execCount = 0;

/** The request header that asks for the stdin port as each of the command's descriptors (and its echo). */
const PORT_HEADER = { stdin: EXEC_STDIN_PORT_HEADER, stdout: EXEC_STDOUT_PORT_HEADER } as const;

/**
 * The shell around a command whose stdout is the stdin port, run as `/bin/sh -c WRAPPER cove-exec
 * COMMAND MARKER`: the command runs in a subshell (its `exit` or `exec` ends only that), then the
 * outer shell writes the end marker to the port and exits with the command's status. The marker is
 * written by a guest process, not the agent: a write to a port whose host end has gone blocks until
 * the host comes back, and a process can be signalled out of that where the agent's thread could not.
 */
export const STDOUT_PORT_WRAPPER = 'c=$1 m=$2; set --; (eval "$c"); s=$?; printf %s "$m"; exit $s';

interface Parked {
  stream: http2.ServerHttp2Stream;
  timer: NodeJS.Timeout;
}

export class ExecStreams {
  /** `stdinPort`: the port a command may take as its stdin (null: none, stdin is always the stream). */
  constructor(private readonly stdinPort: StdinPort | null = null) {}

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
    if (id === undefined) return this.start(stream, req, null, headers);
    if (typeof id !== 'string' || !EXEC_ID_RE.test(id)) return respondError(stream, 400, `the ${EXEC_ID_HEADER} header is not 32 lowercase hex digits`);
    const p = this.parked.get(id);
    if (p) {
      clearTimeout(p.timer);
      this.parked.delete(id);
      if (!p.stream.destroyed) return this.start(stream, req, p.stream, headers);
    }
    if (this.waiting.has(id)) return respondError(stream, 400, `an exec with id ${id} is already waiting for its exec-stderr`);
    const timer = setTimeout(() => {
      this.waiting.delete(id);
      respondError(stream, 400, `no exec-stderr stream with id ${id} arrived within ${EXEC_STDERR_WAIT_MS / 1000} s`);
    }, EXEC_STDERR_WAIT_MS);
    this.waiting.set(id, (errStream) => {
      clearTimeout(timer);
      if (stream.destroyed) errStream.close(http2.constants.NGHTTP2_CANCEL);
      else this.start(stream, req, errStream, headers);
    });
    stream.once('close', () => {
      if (!this.waiting.has(id)) return;
      clearTimeout(timer);
      this.waiting.delete(id);
    });
  }

  /**
   * Runs the command: the stream is its stdout (and its stdin, unless the host asked for the stdin
   * port and the agent could take it), errStream (or the stream) its stderr.
   */
  private start(stream: http2.ServerHttp2Stream, req: ExecRequest, errStream: http2.ServerHttp2Stream | null, headers: http2.IncomingHttpHeaders): void {
    const stderr = errStream ?? stream;
    let cwd = cwdFrom(req.cwd !== undefined ? { [CWD_ENV]: req.cwd } : {});
    if (!fs.existsSync(cwd)) {
      stderr.write(Buffer.from(`cove-agent: working directory ${cwd} does not exist; using /\n`));
      cwd = '/';
    }
    // The port as stdin, or (asked the other way, never both) as stdout.
    const as = headers[EXEC_STDIN_PORT_HEADER] !== undefined ? 'stdin' : headers[EXEC_STDOUT_PORT_HEADER] !== undefined ? 'stdout' : null;
    const port = as && this.stdinPort ? this.stdinPort.open(headers[PORT_HEADER[as]], as) : null;
    // The echo tells the host to use the port; without it stdin and stdout are this stream's bodies.
    const echo = port ? { [PORT_HEADER[port.as]]: port.nonce } : {};
    stream.respond({ [HTTP2_HEADER_STATUS]: 200, ...echo }, { waitForTrailers: true });
    const run = new ExecRun(stream, errStream, req, cwd);
    if (!port) return run.launch(null);
    StdinPort.preamble(port, EXEC_STDIN_PORT_WAIT_MS, () => stream.destroyed)
      .then((problem) => {
        if (problem === null) return run.launch(port); // It closes the agent's copy of the port.
        fs.closeSync(port.fd);
        run.refuse(problem);
      })
      .catch((err: unknown) => run.refuse(errorText(err)));
  }
}

/** One command on exec streams, from its answer (already sent) to its exit trailers. */
class ExecRun {
  private readonly id = `exec#${++execCount}`;
  private trailers: Record<string, string> = { [EXEC_EXIT_TRAILER]: '127' };

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly errStream: http2.ServerHttp2Stream | null,
    private readonly req: ExecRequest,
    private readonly cwd: string,
  ) {
    stream.on('wantTrailers', () => stream.sendTrailers(this.trailers));
    stream.on('error', () => undefined);
    errStream?.on('error', () => undefined);
  }

  /** The command never ran: says why on stderr and ends both streams with exit status 127. */
  refuse(problem: string): void {
    log(`${this.id}: not run: ${problem}`);
    const stderr = this.errStream ?? this.stream;
    if (!stderr.destroyed) stderr.write(Buffer.from(`cove-agent: ${problem}; the command did not run\n`));
    if (this.errStream && !this.errStream.destroyed) this.errStream.end();
    if (!this.stream.destroyed) {
      this.stream.resume();
      this.stream.end();
    }
  }

  /**
   * Starts the command, its stdin or its stdout the stdin port when one is given (the agent's copy
   * is closed once the command has it); on a stdout port, inside STDOUT_PORT_WRAPPER.
   */
  launch(port: OpenedStdinPort | null): void {
    const { stream, errStream, id } = this;
    const stderr = errStream ?? stream;
    const user = currentUser();
    const env = buildEnv(this.req.env, user);
    const portIn = port?.as === 'stdin' ? port : null;
    const portOut = port?.as === 'stdout' ? port : null;
    const args = portOut ? ['-c', STDOUT_PORT_WRAPPER, 'cove-exec', this.req.command, portOut.nonce] : ['-c', this.req.command];
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn('/bin/sh', args, { cwd: this.cwd, env, stdio: [portIn ? portIn.fd : 'pipe', portOut ? portOut.fd : 'pipe', 'pipe'], detached: true });
    } finally {
      if (port) fs.closeSync(port.fd);
    }
    let exited = false;
    const { stdout: out, stderr: err } = child;
    if ((!out && !portOut) || !err) throw new Error('spawn gave the command no stdout or stderr pipe');
    out?.pipe(stream, { end: false });
    // Without a stderr stream (a client that did not ask for one) stderr joins stdout.
    err.pipe(stderr, { end: false });
    let inBytes = 0;
    let inChunks = 0;
    const stdin = child.stdin;
    if (stdin) {
      stream.pipe(stdin);
      stream.on('data', (d: Buffer) => {
        inBytes += d.length;
        inChunks++;
      });
      stdin.on('error', () => undefined); // EPIPE when the process exits before reading stdin.
      // Once the command stops reading, what the host still sends is dropped, so its window never fills.
      stdin.once('close', () => {
        stream.unpipe(stdin);
        stream.resume();
      });
    } else {
      stream.resume(); // The host sends stdin on the port; this body is empty.
    }

    child.on('error', (e) => {
      log(`${id}: cannot start: ${errorText(e)}`);
      if (!stderr.destroyed) stderr.write(Buffer.from(`cove-agent: ${errorText(e)}\n`));
    });
    child.on('close', (code, signal) => {
      exited = true;
      if (signal) {
        this.trailers = { [EXEC_SIGNAL_TRAILER]: signal.replace(/^SIG/, '') };
        log(`${id}: killed by ${signal}`);
      } else {
        // A command that could not start reports a negative errno; 127 is the shell's "not found".
        this.trailers = { [EXEC_EXIT_TRAILER]: String(code !== null && code >= 0 ? code : 127) };
        log(`${id}: exited ${code} (stdin: ${portIn ? 'the stdin port' : `${inBytes} bytes in ${inChunks} chunks`}${portOut ? '; stdout: the stdin port' : ''})`);
      }
      // stderr ends first, so the host has all of it when the exit status arrives.
      if (errStream && !errStream.destroyed) errStream.end();
      if (!stream.destroyed) stream.end();
    });

    const hangup = (): void => {
      // As an SSH exec without a pty when its connection goes: the command loses its pipes (on the
      // stdin port, the host's end closes with the stream, which is the command's EOF).
      if (exited) return;
      stdin?.destroy();
      out?.destroy();
      err.destroy();
      // A port has no reader to lose: its writes would wait for the host for good. SIGPIPE is what
      // the command's next write to a lost pipe would have brought.
      if (portOut && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGPIPE');
        } catch {
          // Gone already.
        }
      }
    };
    stream.once('close', hangup);
    if (errStream) {
      errStream.once('close', () => {
        // A stderr stream reset by the host: stderr's bytes have nowhere to go, so they are dropped.
        if (!exited && errStream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) err.unpipe().resume();
      });
    }
  }
}
