// The image build lock: a stale lock (dead pid) is taken over; a live one is waited for, bounded.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { acquireLock } from '../../vmm-host/image/lock';
import { isLockTimeoutError } from '../../vmm-host/image/errors';

function tmpLock(): { dir: string; file: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-lock-'));
  return { dir, file: path.join(dir, 'locks', 'image-build.lock') };
}

test('a lock whose pid is dead is taken over', async () => {
  const { dir, file } = tmpLock();
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '2147483646\n');
    const lock = await acquireLock(file, { timeoutMs: 2000 });
    assert.equal(fs.readFileSync(file, 'utf8').trim(), String(process.pid));
    lock.release();
    assert.equal(fs.existsSync(file), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a live lock is waited for, and the wait is reported once', async () => {
  const { dir, file } = tmpLock();
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    // pid 1 is alive and is not us: a live holder.
    fs.writeFileSync(file, '1\n');
    const waits: (number | null)[] = [];
    setTimeout(() => fs.rmSync(file), 700);
    const t = Date.now();
    const lock = await acquireLock(file, { timeoutMs: 5000, onWait: (pid) => waits.push(pid) });
    assert.ok(Date.now() - t >= 600);
    assert.deepEqual(waits, [1]);
    lock.release();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('waiting is bounded: a LockTimeoutError names the holder', async () => {
  const { dir, file } = tmpLock();
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, '1\n');
    await assert.rejects(acquireLock(file, { timeoutMs: 600 }), (e: unknown) => isLockTimeoutError(e) && /pid 1/.test((e as Error).message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
