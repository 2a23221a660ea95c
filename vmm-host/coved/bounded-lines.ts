// Reads `\n`-terminated lines from a stream a guest writes, within bounds (docs/security.md): a
// line longer than `maxLineBytes` is dropped without being kept in memory, and lines are handed on
// at most `perSecond` a second (after a `burst`); beyond that the stream is paused, so SSH flow
// control makes the guest wait instead of coved buffering or spinning.
import type { Readable } from 'node:stream';

export interface LineBounds {
  maxLineBytes: number;
  perSecond: number;
  burst: number;
}

/** What coved holds the agent's event stream to. */
export const EVENT_LINE_BOUNDS: LineBounds = { maxLineBytes: 1024 * 1024, perSecond: 500, burst: 5000 };

/**
 * Calls `onLine` for each line of `input` within `bounds`; `onProblem` for each line dropped.
 * Returns a function that stops reading.
 */
export function readBoundedLines(input: Readable, bounds: LineBounds, onLine: (line: string) => void, onProblem: (msg: string) => void): () => void {
  let parts: Buffer[] = [];
  let partBytes = 0;
  /** Set while the rest of an over-long line is being skipped. */
  let skipping = false;
  const queue: Buffer[] = [];
  let tokens = bounds.burst;
  let last = Date.now();
  let timer: NodeJS.Timeout | null = null;
  const state = { stopped: false };

  const refill = () => {
    const now = Date.now();
    tokens = Math.min(bounds.burst, tokens + ((now - last) / 1000) * bounds.perSecond);
    last = now;
  };

  const drain = () => {
    timer = null;
    if (state.stopped) return;
    refill();
    while (queue.length > 0 && tokens >= 1) {
      tokens--;
      const line = queue.shift();
      if (line) onLine(line.toString('utf8'));
    }
    if (queue.length > 0) {
      // Out of tokens: wait for one, with the stream paused meanwhile.
      input.pause();
      timer = setTimeout(drain, Math.max(1, Math.ceil(1000 / bounds.perSecond)));
      return;
    }
    input.resume();
  };

  const onData = (chunk: Buffer) => {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      if (!skipping) {
        partBytes += end - start;
        if (partBytes > bounds.maxLineBytes) {
          onProblem(`a line longer than ${bounds.maxLineBytes} bytes was dropped`);
          skipping = true;
          parts = [];
        } else if (end > start) {
          parts.push(chunk.subarray(start, end));
        }
      }
      if (nl === -1) break;
      if (!skipping) queue.push(Buffer.concat(parts));
      skipping = false;
      parts = [];
      partBytes = 0;
      start = nl + 1;
    }
    if (queue.length > 0 && timer === null) drain();
  };

  input.on('data', onData);
  return () => {
    state.stopped = true;
    if (timer) clearTimeout(timer);
    input.off('data', onData);
  };
}

/**
 * Passes at most `perMinute` messages a minute to `log`; the number held back is reported with the
 * next message let through, so a flood cannot fill the host disk through coved's log.
 */
export function limitedLog(log: (msg: string) => void, perMinute: number): (msg: string) => void {
  let windowStart = Date.now();
  let count = 0;
  let held = 0;
  return (msg: string) => {
    const now = Date.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      count = 0;
    }
    if (count >= perMinute) {
      held++;
      return;
    }
    count++;
    log(held > 0 ? `${msg} (${held} similar messages were not logged)` : msg);
    held = 0;
  };
}
