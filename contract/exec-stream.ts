// A command's stdio as plain data-channel streams (agent/PROTOCOL.md, "Exec streams"): `cove exec`
// without a terminal runs here instead of in an SSH session channel, so its bytes cross nghttp2's
// native framing in the guest rather than ssh2's JavaScript framing and cipher. Both ends and the
// relay in coved import this file; it imports nothing.

/** `:authority` of the stream whose request body is the command's stdin and answer body its stdout. */
export const EXEC_TARGET = 'exec';
/** `:authority` of the stream whose answer body is the command's stderr; opened first. */
export const EXEC_STDERR_TARGET = 'exec-stderr';

/** Request header of `exec`: the command, as base64 of the JSON of an ExecRequest. */
export const EXEC_REQUEST_HEADER = 'cove-exec';
/** Request header of both streams: the id that pairs `exec` with its `exec-stderr` (32 lowercase hex). */
export const EXEC_ID_HEADER = 'cove-exec-id';
/** Trailer of `exec`: the exit status, 0–255. */
export const EXEC_EXIT_TRAILER = 'cove-exit';
/** Trailer of `exec` instead of cove-exit when a signal ended the command: its name without `SIG`. */
export const EXEC_SIGNAL_TRAILER = 'cove-exit-signal';

export const EXEC_ID_RE = /^[0-9a-f]{32}$/;

/**
 * Request header of `exec`: asks the agent to give the command the stdin port (GUEST.stdinPortName)
 * as its stdin instead of the request body. Its value, 32 lowercase hex digits new for every
 * command, is the preamble the host writes first on the port's socket. The agent echoes the header
 * in its answer when it took the port; without the echo, stdin is the request body as usual.
 */
export const EXEC_STDIN_PORT_HEADER = 'cove-exec-stdin-port';
/**
 * Request header of `exec`, the stdin port's other direction: asks the agent to give the command
 * the stdin port as its stdout instead of the answer body (stdin stays the request body). Its value
 * is a nonce as for EXEC_STDIN_PORT_HEADER and never sent with it; the agent echoes it when it took
 * the port. The host writes the nonce first on the port's socket, as for stdin; the command's shell
 * writes it back on the port once the command has exited, after every byte the command wrote, and
 * the host reads the command's stdout up to it.
 *
 * A client (`cove cp` from the guest) sends it to coved with the value EXEC_STDOUT_PORT_WANTED;
 * coved replaces that with a nonce when the port is free and drops it otherwise.
 */
export const EXEC_STDOUT_PORT_HEADER = 'cove-exec-stdout-port';
export const EXEC_STDOUT_PORT_WANTED = 'wanted';
/** How long the host waits, after the command's exit status, for the end of its stdout on the port. */
export const EXEC_STDOUT_PORT_END_MS = 30_000;
/** How long the agent waits for the host's preamble on the stdin port before it gives up. */
export const EXEC_STDIN_PORT_WAIT_MS = 30_000;

/** The longest encoded request the agent takes (a header; the data channel allows 64 KiB of them). */
export const EXEC_REQUEST_MAX = 48 * 1024;
/** How long an `exec-stderr` stream waits for its `exec` before the agent closes it. */
export const EXEC_STDERR_WAIT_MS = 30_000;

export interface ExecRequest {
  /** A command line for `/bin/sh -c`, as an SSH `exec` request carries it. */
  command: string;
  /** Extra environment variables (names of letters, digits and `_`, not starting with a digit). */
  env: Record<string, string>;
  /** The working directory: an absolute path, or absent for the user's home. */
  cwd?: string;
}

export function encodeExecRequest(req: ExecRequest): string {
  return Buffer.from(JSON.stringify(req), 'utf8').toString('base64');
}

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Reads the `cove-exec` header; a string says what is wrong with it. */
export function decodeExecRequest(header: unknown): ExecRequest | string {
  if (typeof header !== 'string' || header.length === 0) return `the ${EXEC_REQUEST_HEADER} header is missing`;
  if (header.length > EXEC_REQUEST_MAX) return `the ${EXEC_REQUEST_HEADER} header is over ${EXEC_REQUEST_MAX} bytes`;
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(header)) return `the ${EXEC_REQUEST_HEADER} header is not base64`;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(header, 'base64').toString('utf8'));
  } catch {
    return `the ${EXEC_REQUEST_HEADER} header is not base64 of JSON`;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'the exec request is not a JSON object';
  const o = v as Record<string, unknown>;
  if (typeof o.command !== 'string' || o.command.length === 0 || o.command.includes('\0')) return 'the exec request needs a non-empty command without NUL bytes';
  const env: Record<string, string> = {};
  if (o.env !== undefined) {
    if (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env)) return 'the exec request env is not an object';
    for (const [k, val] of Object.entries(o.env as Record<string, unknown>)) {
      if (!ENV_NAME_RE.test(k) || typeof val !== 'string' || val.includes('\0')) return `the exec request env has a bad entry: ${JSON.stringify(k).slice(0, 80)}`;
      env[k] = val;
    }
  }
  if (o.cwd !== undefined && (typeof o.cwd !== 'string' || !o.cwd.startsWith('/') || o.cwd.includes('\0'))) return 'the exec request cwd is not an absolute path';
  return { command: o.command, env, ...(typeof o.cwd === 'string' ? { cwd: o.cwd } : {}) };
}

/** The signals an exit trailer may name, and the exit code a shell would report for each (128 + n). */
export const EXEC_SIGNALS: Record<string, number> = {
  HUP: 1, INT: 2, QUIT: 3, ILL: 4, TRAP: 5, ABRT: 6, BUS: 7, FPE: 8, KILL: 9, USR1: 10, SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15,
};

/**
 * The exit code an `exec` stream's trailers report, or null when they report none that can be
 * trusted (a guest is not trusted to send a sane one).
 */
export function exitCodeOf(trailers: Record<string, unknown> | null): number | null {
  if (!trailers) return null;
  const code = trailers[EXEC_EXIT_TRAILER];
  if (typeof code === 'string' && /^\d{1,3}$/.test(code) && Number(code) <= 255) return Number(code);
  const sig = trailers[EXEC_SIGNAL_TRAILER];
  if (typeof sig === 'string') return 128 + (EXEC_SIGNALS[sig] ?? 1);
  return null;
}
