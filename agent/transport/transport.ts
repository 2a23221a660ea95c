// A transport hands byte streams to the SSH server; each stream is one SSH connection. The agent
// serves the same SSH service on every transport it has (lima's guest agent does the same with
// vsock, virtio-serial and a unix socket).
import type { Duplex } from 'node:stream';

/** Called once per new connection; `label` names the connection in the log. */
export type ServeConnection = (stream: Duplex, label: string) => void;

export interface Transport {
  /** A short name for the log: `unix:/run/cove/agent.sock`, `port:/dev/vport0p1`. */
  readonly name: string;
  start(serve: ServeConnection): Promise<void>;
  /** Stops accepting; open connections are left to end by themselves. */
  close(): void;
}
