// What every handler of one SSH connection is given: the connection's label for the log, the event
// hub, and the control channel's handler. Its own file, so that the server and the handlers it
// calls (session.ts, forward.ts) do not import each other.
import type { ServerChannel } from 'ssh2';
import type { EventHub } from './hub';

/** Serves one `cove-control` channel (control.ts). */
export type ControlHandler = (channel: ServerChannel, id: string) => void;

export interface ConnectionContext {
  label: string;
  hub: EventHub;
  /** The control channel's handler; without one, `subsystem cove-control` is refused. */
  control?: ControlHandler;
}
