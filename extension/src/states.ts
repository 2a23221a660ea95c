// Which sandbox states the window treats as "up": a paused or sleeping sandbox wakes on the next
// connection to its Docker or SSH socket, so its terminals, ports and the window's Docker settings
// stay pointed at it, just as for a running one.
import type { SandboxInfo, SandboxState } from '../../contract/protocol';

export const UP_STATES: readonly SandboxState[] = ['running', 'paused', 'asleep'];

/** True when the sandbox runs, or is paused or asleep and wakes on the next connection. */
export function isUp(s: SandboxInfo | undefined): s is SandboxInfo {
  return s !== undefined && UP_STATES.includes(s.state);
}
