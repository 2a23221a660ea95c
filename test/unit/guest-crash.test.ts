// kernelCrashReason: the guest kernel's crash line from a console log, only from the VM now running.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { kernelCrashReason } from '../../vmm-host/coved/guest-crash';

// Lines as a guest printed them under TCG (a restored clone; the oops became a panic).
const OOPS = [
  'cove: restored from the warm-start template 0ef538c23931-mx672t53 as s32 at 2026-12-02T14:20:04.969Z',
  '[ 1101.298262] Oops: double fault: 0000 [#1] PREEMPT SMP NOPTI',
  '[ 1101.298744] CPU: 0 UID: 0 PID: 287 Comm: dockerd Not tainted 6.12.117+deb13-amd64 #1  Debian 6.12.117-1',
  '[ 1101.298989] RIP: 0010:__kmalloc_node_track_caller_noprof+0x1a7/0x430',
  '[ 1101.311320] RSP: 0018:ffffc900004b7af0 EFLAGS: 06e21642',
  '[ 1101.340000] Kernel panic - not syncing: Fatal exception',
].join('\n');

test('the first crash line after the start marker, without its timestamp', () => {
  assert.equal(kernelCrashReason(OOPS), 'Oops: double fault: 0000 [#1] PREEMPT SMP NOPTI');
  const bug = 'cove: initramfs start\n[  146.1] BUG: kernel NULL pointer dereference, address: 00000000000000a8\n[  146.2] Oops: 0002 [#1] PREEMPT SMP NOPTI\n';
  assert.equal(kernelCrashReason(bug), 'BUG: kernel NULL pointer dereference, address: 00000000000000a8');
  assert.equal(kernelCrashReason('cove: initramfs start\r\n[   80.0] Kernel panic - not syncing: sysrq triggered crash\r\n'), 'Kernel panic - not syncing: sysrq triggered crash');
});

test('no crash line: null, also when the crash was before the VM started again', () => {
  assert.equal(kernelCrashReason(''), null);
  assert.equal(kernelCrashReason('cove: initramfs start\ncove: ready t=40s\n'), null);
  assert.equal(kernelCrashReason(`${OOPS}\ncove: initramfs start\ncove: root mounted /dev/vda\n`), null, 'an earlier run crashed, this one did not');
  assert.equal(kernelCrashReason(`${OOPS}\ncove: restored from the warm-start template t as x at now\n`), null);
  // A program's output that merely mentions the words is not the kernel's line.
  assert.equal(kernelCrashReason('cove: initramfs start\nmy-app: saw a BUG: in the log\n'), null);
});

test('an overlong line is cut', () => {
  const r = kernelCrashReason(`cove: initramfs start\n[ 1.0] BUG: ${'x'.repeat(500)}\n`);
  assert.equal(r?.length, 200);
});
