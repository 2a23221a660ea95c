// The one polling wait: coved's client, the tests, the e2e runner and bench/ all use it. Every wait
// has a deadline and a message naming what was awaited (and the last error the probe threw).
import { messageOf } from './errors';

/** A wait that ran past its deadline; the message names what was awaited. */
export class WaitTimeoutError extends Error {
  override name = 'WaitTimeoutError';
  constructor(
    readonly awaited: string,
    readonly timeoutMs: number,
    readonly lastError: unknown,
    readonly hint?: string,
  ) {
    super(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${awaited}${lastError ? ` (last error: ${messageOf(lastError)})` : ''}`);
  }
}

export function isWaitTimeoutError(e: unknown): e is WaitTimeoutError {
  return e instanceof Error && e.name === 'WaitTimeoutError';
}

export interface WaitOptions {
  /** How long to sleep between probes, in ms (default 500). */
  intervalMs?: number;
  /**
   * `retry` (the default): a probe that throws counts as "not yet", and the last error is named
   * in the timeout message; `throw`: the first error ends the wait.
   */
  onError?: 'retry' | 'throw';
  /** What to do next, carried by the timeout error. */
  hint?: string;
}

/**
 * Polls `probe` until it returns a truthy value, and resolves with it. Throws a WaitTimeoutError
 * once `timeoutMs` has passed; a number as the last argument is the interval, in ms.
 */
export async function waitFor<T>(
  awaited: string,
  timeoutMs: number,
  probe: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  opts: WaitOptions | number = {},
): Promise<T> {
  const o: WaitOptions = typeof opts === 'number' ? { intervalMs: opts } : opts;
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      if (o.onError === 'throw') throw e;
      last = e;
    }
    if (Date.now() > deadline) throw new WaitTimeoutError(awaited, timeoutMs, last, o.hint);
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 500));
  }
}
