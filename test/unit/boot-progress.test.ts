// The boot watcher: steps off the console's markers, and a stall off the kernel's hung-task report.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { stallText, watchConsole, type BootStall } from '../../vmm-host/coved/boot-progress';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Watches a console file while `write` appends to it; returns the steps and stalls reported. */
async function watch(write: (append: (text: string) => void) => Promise<void>): Promise<{ steps: string[]; stalls: BootStall[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-boot-progress-'));
  const file = path.join(dir, 'console.log');
  const steps: string[] = [];
  const stalls: BootStall[] = [];
  const stop = watchConsole(file, (step) => steps.push(step), (s) => stalls.push(s));
  try {
    await write((text) => fs.appendFileSync(file, text));
    await sleep(700); // The watcher reads every 250 ms.
  } finally {
    stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { steps, stalls };
}

const HUNG = '[  242.964013] INFO: task mount:153 blocked for more than 120 seconds.\n[  242.964893]       Not tainted 6.12.117+deb13-amd64 #1 Debian 6.12.117-1\n';

test('a hung task during boot is reported once, with the task, its time and the last step reached', async () => {
  const { steps, stalls } = await watch(async (append) => {
    append('[    0.000000] Linux version 6.12.117+deb13-amd64\ncove: initramfs start\n');
    await sleep(400);
    append(HUNG);
    await sleep(400);
    append('[  363.796064] INFO: task mount:153 blocked for more than 241 seconds.\n');
  });
  assert.deepEqual(steps, ['kernel', 'initramfs']);
  assert.equal(stalls.length, 1);
  assert.deepEqual(stalls[0], { task: 'mount:153', seconds: 120, step: 'initramfs', message: 'finding the root disk' });
  assert.equal(stallText(stalls[0]), 'the guest stalled during boot after "finding the root disk": its kernel reports task mount:153 blocked for more than 120 s');
});

test('a boot without a hung-task report reports no stall', async () => {
  const { steps, stalls } = await watch(async (append) => {
    append('cove: initramfs start\ncove: root mounted /dev/vda\ncove: init start\n[   12.1] INFO: something else\ncove: ready\n');
  });
  assert.deepEqual(steps, ['initramfs', 'root', 'init', 'ready']);
  assert.deepEqual(stalls, []);
});

test('a stall before any marker names the kernel as the step', async () => {
  const { stalls } = await watch(async (append) => append(HUNG));
  assert.equal(stalls.length, 1);
  assert.equal(stalls[0].step, 'kernel');
});
