// coved's pid lock is the image lock (vmm-host/image/lock.ts): one coved per $COVE_HOME, even when
// the second one looks at the pid file in the instant between its creation and its pid being written.
import assert from 'node:assert/strict';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { takeLockOrHolder, tryLock } from '../../vmm-host/image/lock';

function tmpFile(): { dir: string; file: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-pidlock-'));
  return { dir, file: path.join(dir, 'coved.pid') };
}

/** A live process that is not this one, killed by the test. */
function liveProcess(): child_process.ChildProcess {
  return child_process.spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
}

test('an empty, just-created pid file is not taken for a stale one (defect #5)', async () => {
  const { dir, file } = tmpFile();
  const other = liveProcess();
  try {
    // The other coved has created the file (O_EXCL) and is about to write its pid.
    fs.writeFileSync(file, '');
    setTimeout(() => fs.writeFileSync(file, `${other.pid}`), 300);
    const got = await takeLockOrHolder(file);
    assert.equal(got, other.pid, 'the second coved must see the first one, not take its lock');
    assert.equal(fs.readFileSync(file, 'utf8'), `${other.pid}`, 'the live lock is left in place');
  } finally {
    other.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an empty pid file that nobody writes is stale after the grace period', async () => {
  const { dir, file } = tmpFile();
  try {
    fs.writeFileSync(file, '');
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(file, old, old);
    const got = await takeLockOrHolder(file);
    assert.notEqual(typeof got, 'number');
    assert.equal(fs.readFileSync(file, 'utf8').trim(), String(process.pid));
    if (typeof got !== 'number') got.release();
    assert.equal(fs.existsSync(file), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a pid file naming a dead process is taken over; one naming a live one is not', async () => {
  const { dir, file } = tmpFile();
  const other = liveProcess();
  try {
    fs.writeFileSync(file, '2147483646');
    const mine = await takeLockOrHolder(file);
    assert.notEqual(typeof mine, 'number');
    if (typeof mine !== 'number') mine.release();
    fs.writeFileSync(file, `${other.pid}\n`);
    assert.equal(await takeLockOrHolder(file), other.pid);
    // A live pid that is not a coved (pid reuse) does not hold coved's lock.
    const taken = tryLock(file, { isAlive: () => false });
    assert.ok(taken.lock);
    taken.lock.release();
  } finally {
    other.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('eight processes racing for a stale pid file: exactly one wins', async () => {
  const { dir, file } = tmpFile();
  const lockModule = path.join(__dirname, '..', '..', 'vmm-host', 'image', 'lock.js');
  // Each contender takes the lock, holds it a moment, and prints "won" or the holder's pid.
  // All start at the same instant (a shared start time), so their attempts really overlap.
  const startAt = Date.now() + 1500;
  const script = `
    const { takeLockOrHolder } = require(${JSON.stringify(lockModule)});
    while (Date.now() < ${startAt});
    takeLockOrHolder(${JSON.stringify(file)}).then((got) => {
      process.stdout.write(typeof got === 'number' ? 'lost ' + got : 'won');
      setTimeout(() => process.exit(0), 1500);
    });`;
  try {
    // A stale file, so that both contenders also race to take it over.
    fs.writeFileSync(file, '2147483646');
    const runs = Array.from({ length: 8 }, () =>
      new Promise<string>((resolve) => {
        const c = child_process.spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        c.stdout.on('data', (d: Buffer) => (out += d.toString()));
        c.on('close', () => resolve(out));
      }),
    );
    const outs = await Promise.all(runs);
    assert.equal(outs.filter((o) => o === 'won').length, 1, outs.join(', '));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
