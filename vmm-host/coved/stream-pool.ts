// A few streams to the guest's dockerd opened ahead of need, so a new Docker client connection does
// not wait for one to open (a round trip into the guest, and dockerd's accept). The pool refills in
// the background after each take; a pooled stream that ends, fails or grows old is dropped and
// replaced; everything is dropped when the link goes down (an agent restart), and the pool fills
// again once it is back up. Pooled streams do not count as client connections for idleness.
import type { Duplex } from 'node:stream';

export interface StreamPoolOptions {
  /** Opens one stream; rejects when the guest cannot give one now. */
  open: () => Promise<Duplex>;
  /** How many streams to keep ready. */
  size: number;
  /**
   * How long after a take the pool opens its replacement: under TCG opening a stream costs the
   * guest CPU time, which would otherwise be taken from the request just sent on the stream taken.
   */
  refillDelayMs: number;
  /**
   * A pooled stream older than this is replaced, well before dockerd closes a connection that sent
   * no request (its ReadHeaderTimeout), so a client never gets one dockerd is about to close.
   */
  maxAgeMs: number;
  log: (msg: string) => void;
}

interface Pooled {
  stream: Duplex;
  at: number;
  /** Takes the pool's watchers off the stream. */
  release(): void;
}

export class StreamPool {
  private readonly ready: Pooled[] = [];
  private opening = 0;
  private running = false;
  private failures = 0;
  private retry: NodeJS.Timeout | null = null;
  private refill: NodeJS.Timeout | null = null;
  private ager: NodeJS.Timeout | null = null;

  constructor(private readonly opts: StreamPoolOptions) {}

  get size(): number {
    return this.ready.length;
  }

  /** Starts filling (the link is up); idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.failures = 0;
    this.ager = setInterval(() => this.dropOld(), Math.max(1000, this.opts.maxAgeMs / 4));
    this.ager.unref();
    this.fill();
  }

  /** Drops every pooled stream and stops filling (the link went down, the VM pauses or stops). */
  stop(): void {
    this.running = false;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    if (this.refill) clearTimeout(this.refill);
    this.refill = null;
    if (this.ager) clearInterval(this.ager);
    this.ager = null;
    for (const p of this.ready.splice(0)) {
      p.release();
      p.stream.destroy();
    }
  }

  /** A ready stream, or null when none is (the caller opens one itself); a refill starts either way. */
  take(): Duplex | null {
    let got: Duplex | null = null;
    while (this.ready.length > 0 && !got) {
      const p = this.ready.shift();
      if (!p) break;
      p.release();
      if (p.stream.destroyed || !p.stream.readable || !p.stream.writable) p.stream.destroy();
      else got = p.stream;
    }
    if (got && this.opts.refillDelayMs > 0) {
      // A burst of takes (docker run opens several connections) is refilled once, after its start.
      this.refill ??= setTimeout(() => {
        this.refill = null;
        this.fill();
      }, this.opts.refillDelayMs);
      this.refill.unref();
    } else {
      this.fill();
    }
    return got;
  }

  private dropOld(): void {
    const now = Date.now();
    for (const p of [...this.ready]) {
      if (now - p.at < this.opts.maxAgeMs) continue;
      this.remove(p);
      p.stream.destroy();
    }
    this.fill();
  }

  private remove(p: Pooled): void {
    const i = this.ready.indexOf(p);
    if (i >= 0) this.ready.splice(i, 1);
    p.release();
  }

  private fill(): void {
    while (this.running && this.retry === null && this.ready.length + this.opening < this.opts.size) {
      this.opening++;
      this.opts.open().then(
        (stream) => {
          this.opening--;
          this.failures = 0;
          if (!this.running) {
            stream.destroy();
            return;
          }
          this.add(stream);
        },
        (err: unknown) => {
          this.opening--;
          this.failures++;
          if (this.failures === 1) this.opts.log(`stream pool: cannot open a stream ahead (${err instanceof Error ? err.message : String(err)}); retrying`);
          // dockerd restarting, or the guest busy: back off, up to 10 s between tries.
          if (this.running && this.retry === null) {
            this.retry = setTimeout(() => {
              this.retry = null;
              this.fill();
            }, Math.min(10_000, 250 * 2 ** Math.min(this.failures, 6)));
            this.retry.unref();
          }
        },
      );
    }
  }

  private add(stream: Duplex): void {
    // Anything from a stream nobody has used yet is its end (dockerd closed it) or an error: drop it.
    const drop = () => {
      this.remove(p);
      stream.destroy();
      this.fill();
    };
    const p: Pooled = {
      stream,
      at: Date.now(),
      release: () => {
        stream.off('readable', drop);
        stream.off('close', drop);
        stream.off('error', drop);
      },
    };
    stream.on('readable', drop);
    stream.once('close', drop);
    stream.once('error', drop);
    this.ready.push(p);
  }
}
