// Which sandbox states the window treats as "up": a paused or sleeping sandbox wakes on the next
// connection to its Docker or SSH socket, so its terminals, ports and the window's Docker settings
// stay pointed at it, just as for a running one.
import type { SandboxInfo, SandboxState } from '../../contract/protocol';

export const UP_STATES = ['running', 'paused', 'asleep'] as const satisfies readonly SandboxState[];

/**
 * True when the sandbox runs, or is paused or asleep and wakes on the next connection. The guard
 * names the state too, so that `false` leaves a stopped sandbox possible, not only `undefined`.
 */
export function isUp(s: SandboxInfo | undefined): s is SandboxInfo & { state: (typeof UP_STATES)[number] } {
  return s !== undefined && (UP_STATES as readonly SandboxState[]).includes(s.state);
}
