// The agent's event stream: one JSON object per line on the `cove-events` SSH subsystem.
// This module is the only place the event types are written; the agent, coved and the tests import
// it, and `contract/events.schema.json` says the same for non-TypeScript clients (events-check.ts
// validates against it).

/** Sent once, first, when a client opens the stream: what the guest looks like right now. */
export interface HelloEvent {
  type: 'hello';
  agentVersion: string;
  /** Guest kernel release (`uname -r`). */
  kernel: string;
  /** Seconds since the guest booted. */
  uptime: number;
  dockerd: DockerdState;
  ports: ListeningPort[];
  /**
   * Why the sandbox is degraded, one sentence each (a workspace mount that failed, a config the
   * init could not read); absent when nothing is wrong. coved marks such a sandbox degraded.
   */
  problems?: string[];
  /**
   * The guest's address on the forwarding NIC (contract/guest.ts GUEST_FORWARD_NIC), present when
   * the init set that NIC up: coved then sends forwarded ports to listeners on every address
   * through it rather than through the agent.
   */
  forwardAddress?: string;
}

/**
 * dockerd answered `/_ping` for the first time since the agent started (once per boot, unless the
 * agent itself was restarted; `bootSeconds` is the boot's first answer either way).
 */
export interface ReadyEvent {
  type: 'ready';
  /** Seconds from guest boot to the first answered `/_ping`. */
  bootSeconds: number;
  /** As in `hello`: why the sandbox is degraded; absent when nothing is wrong. */
  problems?: string[];
}

export type DockerdState = 'starting' | 'running' | 'stopped';

export interface DockerdEvent {
  type: 'dockerd';
  state: DockerdState;
}

export interface ListeningPort {
  proto: 'tcp';
  /** The address the guest socket is bound to, e.g. `0.0.0.0` or `::`. */
  address: string;
  port: number;
}

export interface PortEvent extends ListeningPort {
  type: 'port';
  action: 'added' | 'removed';
}

export interface ShutdownEvent {
  type: 'shutdown';
  reason: string;
}

export type AgentEvent = HelloEvent | ReadyEvent | DockerdEvent | PortEvent | ShutdownEvent;

/** The SSH subsystem name that carries the event stream. */
export const EVENTS_SUBSYSTEM = 'cove-events';
