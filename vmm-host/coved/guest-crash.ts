// What the guest kernel said when it crashed, read from the console log: the line a person needs to
// tell a guest kernel crash from a host that killed qemu. The guest runs with `oops=panic panic=-1`
// and qemu with `-no-reboot` (driver/qemu.ts), so any oops ends the VM at once and the sandbox shows
// as crashed, instead of a half-alive guest whose agent and dockerd stop answering for good.

/** Where the console log of the VM now running begins: a cold boot's first line, or coved's restore marker. */
const START_RE = /^cove: (initramfs start|restored from the warm-start template)/;
/** The kernel's own first words about a crash (a line of its own, after the timestamp). */
const CRASH_RE = /^(BUG: .*|Oops: .*|general protection fault.*|Kernel panic - not syncing: .*)$/;

/**
 * The first crash line the kernel printed since the VM last started, without its timestamp, or null
 * when the console shows none (qemu was killed, or died on its own).
 */
export function kernelCrashReason(consoleText: string): string | null {
  const lines = consoleText.replace(/\r/g, '').split('\n');
  let from = 0;
  lines.forEach((l, i) => {
    if (START_RE.test(l)) from = i + 1;
  });
  for (const line of lines.slice(from)) {
    const m = CRASH_RE.exec(line.replace(/^\[\s*\d+\.\d+\]\s*/, ''));
    if (m) return m[1].trim().slice(0, 200);
  }
  return null;
}
