// The stdin port (PROTOCOL.md, "The stdin port"): a virtio-serial port whose char device becomes a
// `cove exec` command's stdin, so host → guest bytes go from qemu to the command with no process in
// the guest copying them. The agent only opens the device and reads the host's preamble off it.
// Asked the other way round (`cove cp` from the guest), it is the command's stdout instead; the
// command's shell then writes the end marker after it (exec-stream.ts, STDOUT_PORT_WRAPPER). A
// large Docker upload takes it the same way, as the request bytes of one dockerd connection
// (docker-upload.ts). One holder at a time.
//
// What the Linux driver does, and why the order below: a port has one opener at a time (EBUSY
// otherwise); opening it drops whatever was queued before; while the host end is not connected a
// read returns 0 at once, and once it is connected a read waits for bytes; after the host
// disconnects, reads return what is left and then 0, the command's EOF. So the agent opens first,
// answers, and the host connects and writes the preamble; reads that return 0 before it arrives
// mean "not connected yet".
import * as fs from 'node:fs';
import { EXEC_ID_RE } from '../contract/exec-stream';
import { errorText, log } from './log';
import { readFd, sleep } from './transport/port';

const RETRY_MS = 5;

export interface OpenedStdinPort {
  fd: number;
  nonce: string;
  /** Which of the command's descriptors the port becomes. */
  as: 'stdin' | 'stdout';
}

export class StdinPort {
  private reported = false;

  /** `device` finds the port's char device (null: this VM has none). */
  constructor(private readonly device: () => string | null) {}

  /**
   * Opens the port for the command whose host sent `nonce`, as its stdin or its stdout; null when
   * that must be the stream.
   */
  open(nonce: unknown, as: 'stdin' | 'stdout' = 'stdin'): OpenedStdinPort | null {
    if (typeof nonce !== 'string' || !EXEC_ID_RE.test(nonce)) {
      log(`data: a stream asked for the stdin port without a valid nonce; ${as} is the stream`);
      return null;
    }
    const dev = this.device();
    if (!dev) {
      if (!this.reported) log(`data: the host asked for the stdin port but this VM has none; ${as} is the stream`);
      this.reported = true;
      return null;
    }
    try {
      // As stdout, read and write: the host's preamble comes in, the command's bytes go out.
      return { fd: fs.openSync(dev, as === 'stdin' ? 'r' : 'r+'), nonce, as };
    } catch (err) {
      // EBUSY: an earlier command, or something it left running, still holds the port.
      log(`data: cannot open the stdin port ${dev}: ${errorText(err)}; ${as} is the stream`);
      return null;
    }
  }

  /**
   * Reads the host's preamble off the port: null once it matched, else what went wrong. Gives up
   * after `waitMs`, or as soon as `abandoned()` says the command's stream is gone.
   */
  static async preamble(port: OpenedStdinPort, waitMs: number, abandoned: () => boolean): Promise<string | null> {
    const want = Buffer.from(port.nonce, 'latin1');
    const got = Buffer.alloc(want.length);
    let n = 0;
    const until = Date.now() + waitMs;
    while (n < got.length) {
      if (abandoned()) return 'the host went away before connecting the stdin port';
      let r: number;
      try {
        r = await readFd(port.fd, got.subarray(n));
      } catch (err) {
        return `cannot read the stdin port: ${errorText(err)}`;
      }
      if (r > 0) {
        n += r;
        continue;
      }
      if (Date.now() > until) return `the host did not connect the stdin port within ${waitMs / 1000} s`;
      await sleep(RETRY_MS);
    }
    return got.equals(want) ? null : 'the stdin port began with bytes that are not this stream\'s preamble';
  }
}
