// For hosts that talk to the agent over its port transport (the virtio-serial channel). The port is
// one byte stream that outlives host connections: a write the agent had in flight when the previous
// host left can reach the next host ahead of the new SSH session, and SSH clients refuse such bytes
// before the server's version line. A host wraps its end of the channel in skipToBanner() before it
// hands it to an SSH client: everything before the agent's version line is dropped.
import { Duplex } from 'node:stream';

/** Every version line of the agent starts with this (RFC 4253 4.2: `SSH-2.0-<software>`). */
export const AGENT_BANNER_PREFIX = 'SSH-2.0-cove-agent_';

/** Drops at most this many stale bytes; more means the peer is not a cove agent. */
const MAX_SKIP = 1024 * 1024;

/**
 * Wraps a duplex byte stream: writes pass through; reads start at the agent's version line.
 * The wrapper ends, with an error, if no banner arrives within MAX_SKIP bytes.
 */
export function skipToBanner(inner: Duplex): Duplex {
  const prefix = Buffer.from(AGENT_BANNER_PREFIX, 'latin1');
  let pending: Buffer | null = Buffer.alloc(0); // null once the banner is found.
  let skipped = 0;
  const outer = new Duplex({
    read() {
      inner.resume();
    },
    write(chunk: Buffer, _encoding, cb) {
      inner.write(chunk, cb);
    },
    final(cb) {
      inner.end();
      cb();
    },
    destroy(err, cb) {
      inner.destroy();
      cb(err);
    },
  });
  inner.on('data', (chunk: Buffer) => {
    let data = chunk;
    if (pending !== null) {
      const all = Buffer.concat([pending, chunk]);
      const at = all.indexOf(prefix);
      if (at < 0) {
        // Keep the tail that could be the start of a split banner.
        const keep = Math.min(all.length, prefix.length - 1);
        skipped += all.length - keep;
        pending = all.subarray(all.length - keep);
        if (skipped > MAX_SKIP) outer.destroy(new Error(`no cove agent banner in the first ${MAX_SKIP} bytes of the agent channel`));
        return;
      }
      pending = null;
      data = all.subarray(at);
    }
    if (!outer.push(data)) inner.pause();
  });
  inner.on('end', () => outer.push(null));
  inner.on('error', (err) => outer.destroy(err));
  inner.on('close', () => {
    if (!outer.destroyed) outer.destroy();
  });
  return outer;
}
