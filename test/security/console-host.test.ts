// The console log bound (vmm-host/coved/console-bound.ts) on a real file of this host, written the
// way qemu writes it: one descriptor that keeps its offset while the space before it is given back.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { boundConsoleLog, consoleKeepBytes, DEFAULT_CONSOLE_KEEP_BYTES } from '../../vmm-host/coved/console-bound';
import { tmpDir } from './helpers';

test('a console log written without end keeps at most about twice the bound on disk, and its tail', () => {
  const dir = tmpDir('cove-sec-console-');
  const file = path.join(dir, 'console.log');
  const keep = 1024 * 1024;
  const fd = fs.openSync(file, 'w');
  const logs: string[] = [];
  try {
    const line = Buffer.from('guest console flood '.repeat(50) + '\n');
    let written = 0;
    let most = 0;
    while (written < 64 * 1024 * 1024) {
      for (let i = 0; i < 1000; i++) written += fs.writeSync(fd, line);
      boundConsoleLog(file, (m) => logs.push(m), keep);
      most = Math.max(most, fs.statSync(file).blocks * 512);
    }
    fs.writeSync(fd, 'cove: the last line\n');
    boundConsoleLog(file, (m) => logs.push(m), keep);
    assert.deepEqual(logs, [], 'hole punching works on this file system');
    const st = fs.statSync(file);
    assert.equal(st.size, written + 'cove: the last line\n'.length, 'the size is kept, so the writer is undisturbed');
    assert.ok(most <= 2 * keep + 2 * 1024 * 1024, `the file used ${most} bytes of disk at most`);
    const tail = Buffer.alloc(64);
    fs.readSync(fs.openSync(file, 'r'), tail, 0, 64, st.size - 64);
    assert.match(tail.toString(), /cove: the last line\n$/);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('COVE_CONSOLE_MAX_BYTES is read', () => {
  assert.equal(consoleKeepBytes({ COVE_CONSOLE_MAX_BYTES: '4096' }), 4096);
  assert.equal(consoleKeepBytes({}), DEFAULT_CONSOLE_KEEP_BYTES);
});
