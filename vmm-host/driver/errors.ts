// Typed errors of the VM driver; each carries a `hint` saying what to do next.

export class DriverError extends Error {
  readonly hint: string;
  constructor(message: string, hint: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DriverError';
    this.hint = hint;
  }
}

/** A wait ran past its deadline; the message names what was awaited. */
export class DeadlineError extends DriverError {
  readonly awaited: string;
  readonly timeoutMs: number;
  constructor(awaited: string, timeoutMs: number, hint: string) {
    super(`timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for ${awaited}`, hint);
    this.name = 'DeadlineError';
    this.awaited = awaited;
    this.timeoutMs = timeoutMs;
  }
}

export function isDriverError(e: unknown): e is DriverError {
  return e instanceof Error && 'hint' in e && typeof e.hint === 'string' && (e.name === 'DriverError' || e.name === 'DeadlineError');
}
export function isDeadlineError(e: unknown): e is DeadlineError {
  return e instanceof Error && e.name === 'DeadlineError';
}
