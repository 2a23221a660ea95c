// The data channel (agent/PROTOCOL.md, "The data channel"): a second virtio-serial port that carries
// HTTP/2 with prior knowledge, one CONNECT stream per host connection to dockerd's socket or to a
// guest TCP port. Bulk bytes cross it in nghttp2's native framing, with no cipher: the port is only
// reachable through qemu's 0600 chardev socket in the sandbox folder. Both ends import this file;
// it imports nothing but node:net.
import { isIPv4, isIPv6 } from 'node:net';

/** The first bytes of each host connection and of the guest's answer: `COVE-DATA/1 <nonce>\n`. */
export const DATA_HELLO_PREFIX = 'COVE-DATA/1 ';
/** A nonce is 32 lowercase hex digits (16 random bytes), fresh for every host connection. */
export const DATA_HELLO_RE = /COVE-DATA\/1 ([0-9a-f]{32})\n/;
/** The longest hello line, so a reader scanning for one keeps no more than this of a chunk's tail. */
export const DATA_HELLO_BYTES = DATA_HELLO_PREFIX.length + 32 + 1;

export function dataHello(nonce: string): string {
  return `${DATA_HELLO_PREFIX}${nonce}\n`;
}

/** The header that carries why a stream was refused, for the host's log and its client's error. */
export const DATA_ERROR_HEADER = 'cove-error';

/** Response headers that refuse a stream with `status`; the reason as one line of visible ASCII. */
export function refusalHeaders(status: number, message: string): Record<string, string | number> {
  return { ':status': status, [DATA_ERROR_HEADER]: message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500) };
}

/** The `:authority` of a CONNECT to dockerd's socket (GUEST.dockerSock). */
export const DATA_TARGET_DOCKER = 'docker.sock';
/**
 * The `:authority` of a CONNECT to the agent's own SSH socket (GUEST.agentSock): OpenSSH, `cove exec`
 * and `cove cp` reach the SSH server there, and still authenticate to it. No other unix socket is
 * reachable.
 */
export const DATA_TARGET_AGENT = 'agent.sock';

/**
 * Request header of a CONNECT to DATA_TARGET_DOCKER: asks the agent to take the connection's
 * request bytes from the stdin port (GUEST.stdinPortName) instead of the stream's body, for a large
 * upload. Its value, 32 lowercase hex digits new for every connection, is the preamble the host
 * writes first on the port's socket, as for EXEC_STDIN_PORT_HEADER. The agent echoes it when it
 * took the port; without the echo the connection is an ordinary one and the host sends on the stream.
 */
export const DOCKER_STDIN_PORT_HEADER = 'cove-docker-stdin-port';

/**
 * HTTP/2 settings both ends announce: frames of up to 1 MiB may be received (a Node sender still
 * sends DATA frames of at most 16 KiB, nghttp2's default payload length: docs/data-path.md), and
 * windows wide enough that a stream is never held up by flow control on a link this short.
 */
export const DATA_SETTINGS = {
  maxFrameSize: 1024 * 1024,
  initialWindowSize: 8 * 1024 * 1024,
  enablePush: false,
  maxConcurrentStreams: 1024,
  maxHeaderListSize: 64 * 1024,
} as const;
/** The connection-level receive window each end opens at the start (above the 64 KiB default). */
export const DATA_CONNECTION_WINDOW = 32 * 1024 * 1024;

/** Where a CONNECT goes: dockerd's socket, the agent's SSH socket, or a TCP address as the guest sees it. */
export type DataTarget = { kind: 'docker' } | { kind: 'agent' } | { kind: 'tcp'; host: string; port: number };

/**
 * Reads a CONNECT's `:authority`: `docker.sock`, `agent.sock`, or `IPv4:port` / `[IPv6]:port` (an IP literal, no
 * names: nothing is resolved). Anything else is null, and the guest refuses it.
 */
export function parseDataTarget(authority: string): DataTarget | null {
  if (authority === DATA_TARGET_DOCKER) return { kind: 'docker' };
  if (authority === DATA_TARGET_AGENT) return { kind: 'agent' };
  const m = /^(?:([0-9.]+)|\[([0-9a-fA-F:.]+)\]):(\d{1,5})$/.exec(authority);
  if (!m) return null;
  const [, v4, v6, portText] = m as unknown as [string, string | undefined, string | undefined, string];
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  if (v4 !== undefined) return isIPv4(v4) ? { kind: 'tcp', host: v4, port } : null;
  return v6 !== undefined && isIPv6(v6) ? { kind: 'tcp', host: v6, port } : null;
}

/** The `:authority` for a target; an IPv6 host goes in brackets. */
export function dataAuthority(target: DataTarget): string {
  if (target.kind === 'docker') return DATA_TARGET_DOCKER;
  if (target.kind === 'agent') return DATA_TARGET_AGENT;
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}
