// Boot progress read off a guest's serial console: the `cove: …` markers of docs/guest.md, as
// steps with a rough share of the boot.
import * as fs from 'node:fs';

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

/** Reads the console log as it grows and reports each boot step once; returns a stop function. */
export function watchConsole(file: string, onStep: (step: string, message: string, fraction: number) => void): () => void {
  let pos = 0;
  let next = 0;
  let carry = '';
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
    } finally {
      fs.closeSync(fd);
    }
  }, 250);
  return () => clearInterval(timer);
}
