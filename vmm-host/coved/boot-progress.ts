// Boot progress read off a guest's serial console: the `cove: …` markers of docs/guest.md, as
// steps with a rough share of the boot; and a boot that stalled, which the kernel's hung-task check
// says on the console ("INFO: task mount:153 blocked for more than 120 seconds.") long before the
// boot's deadline runs out.
import * as fs from 'node:fs';

/** The kernel's hung-task report: a task in uninterruptible sleep for its timeout (120 s by default). */
const HUNG_TASK_RE = /INFO: task (\S+) blocked for more than (\d+) seconds/;

/** What a stalled boot says: the task and how long, and the last boot step reached. */
export interface BootStall {
  task: string;
  seconds: number;
  /** The last step of MARKERS seen before the stall ('kernel' when none). */
  step: string;
  message: string;
}

/** The one-line description of a stall, for logs and errors. */
export function stallText(s: BootStall): string {
  return `the guest stalled during boot after "${s.message}": its kernel reports task ${s.task} blocked for more than ${s.seconds} s`;
}

/** The console markers of docs/guest.md, as boot steps with a rough share of the boot. */
const MARKERS: Array<[RegExp, string, string, number]> = [
  [/Linux version/, 'kernel', 'the guest kernel is starting', 0.05],
  [/cove: initramfs start/, 'initramfs', 'finding the root disk', 0.1],
  [/cove: root mounted/, 'root', 'root file system mounted', 0.15],
  [/cove: init start/, 'init', 'the guest init is running', 0.2],
  [/cove: modules loaded/, 'modules', 'kernel modules loaded', 0.3],
  [/cove: workspace mounted/, 'workspace', 'the folder is mounted in the guest', 0.35],
  [/cove: service cove-agent started|cove: service agent started/, 'agent', 'the agent is starting', 0.4],
  [/cove: service containerd started/, 'containerd', 'containerd is starting', 0.45],
  [/cove: service dockerd started/, 'dockerd', 'dockerd is starting', 0.55],
  [/cove: ready/, 'ready', 'dockerd answers', 0.95],
];

/**
 * Reads the console log as it grows and reports each boot step once, and the first hung-task report
 * to `onStall` (a boot is never expected to have one); returns a stop function.
 */
export function watchConsole(file: string, onStep: (step: string, message: string, fraction: number) => void, onStall?: (stall: BootStall) => void): () => void {
  let pos = 0;
  let next = 0;
  let carry = '';
  let stalled = false;
  const timer = setInterval(() => {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= pos) return;
      const buf = Buffer.alloc(Math.min(size - pos, 1 << 20));
      fs.readSync(fd, buf, 0, buf.length, pos);
      pos += buf.length;
      carry = (carry + buf.toString('utf8')).slice(-8192);
      for (let i = next; i < MARKERS.length; i++) {
        const [re, step, message, fraction] = MARKERS[i];
        if (re.test(carry)) {
          next = i + 1;
          onStep(step, message, fraction);
        }
      }
      const hung = onStall && !stalled ? HUNG_TASK_RE.exec(carry) : null;
      if (hung) {
        stalled = true;
        const [, step, message] = next > 0 ? MARKERS[next - 1] : [null, 'kernel', 'the guest kernel is starting'];
        onStall?.({ task: hung[1], seconds: Number(hung[2]), step, message });
      }
    } finally {
      fs.closeSync(fd);
    }
  }, 250);
  return () => clearInterval(timer);
}
