// The guest halves of `cove cp`'s one-file paths (vmm-host/cli/copy-exec.ts): PUT_FILE_SCRIPT and
// GET_FILE_SCRIPT run by this host's /bin/sh with its GNU coreutils, as the guest runs them, against
// real files in a scratch folder. The whole paths (exec streams, the stdin port, a real guest) are
// exercised in test/integration/sandbox.test.ts, and a guest that lies in test/security/guest.test.ts.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { GET_FILE_SCRIPT, modeArgs, PUT_FILE_SCRIPT, touchTime } from '../../vmm-host/cli/copy-exec';

describe('cove cp: the one-file scripts', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-put-file-'));
  after(() => fs.rmSync(root, { recursive: true, force: true }));
  const MTIME = '1620172923.123456789';

  function put(dst: string, input: Buffer, opts: { size?: number; perm?: number } = {}): { code: number | null; stderr: string } {
    const { mask, mode } = modeArgs(opts.perm ?? 0o640);
    const args = [dst, 'src.bin', '.cove-cp-0123456789ab.tmp', String(opts.size ?? input.length), mask, mode, MTIME];
    const r = spawnSync('/bin/sh', ['-c', PUT_FILE_SCRIPT, 'cove-cp', ...args], { input, encoding: 'utf8' });
    return { code: r.status, stderr: r.stderr };
  }
  const temps = (dir: string) => fs.readdirSync(dir).filter((n) => n.startsWith('.cove-cp-'));

  test('a new name gets the bytes, the mode and the time (atime too, as docker cp), and no temporary file is left', () => {
    const bytes = Buffer.from('x'.repeat(3 * 1024 * 1024 + 17));
    const dst = path.join(root, 'new.bin');
    assert.deepEqual(put(dst, bytes), { code: 0, stderr: '' });
    // Stat first: reading the file sets its atime (relatime).
    const st = fs.statSync(dst, { bigint: true });
    assert.ok(fs.readFileSync(dst).equals(bytes));
    assert.equal(Number(st.mode) & 0o777, 0o640);
    assert.equal(touchTime(st.mtimeNs), MTIME);
    assert.equal(touchTime(st.atimeNs), MTIME);
    assert.deepEqual(temps(root), []);
  });

  test('modes: by the umask without execute bits, by chmod with them; an empty file', () => {
    for (const perm of [0o755, 0o644, 0o400, 0o000, 0o4755]) {
      const dst = path.join(root, `mode-${perm.toString(8)}`);
      assert.deepEqual(put(dst, Buffer.alloc(0), { perm }), { code: 0, stderr: '' });
      const st = fs.statSync(dst);
      assert.equal(st.mode & 0o7777, perm & 0o777, `mode ${perm.toString(8)}`);
      assert.equal(st.size, 0);
    }
    assert.deepEqual(modeArgs(0o100644), { mask: '133', mode: '' });
    assert.deepEqual(modeArgs(0o100755), { mask: '077', mode: '755' });
  });

  test('a folder receives the file under its own name; a folder at the final name is refused', () => {
    const dir = path.join(root, 'into');
    fs.mkdirSync(dir);
    assert.equal(put(`${dir}/`, Buffer.from('a')).code, 0);
    assert.equal(fs.readFileSync(path.join(dir, 'src.bin'), 'utf8'), 'a');
    fs.mkdirSync(path.join(dir, 'blocked', 'src.bin'), { recursive: true });
    const r = put(path.join(dir, 'blocked'), Buffer.from('b'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /blocked\/src\.bin is a folder in the guest, so a file cannot replace it; move it away and copy again/);
    assert.deepEqual(temps(path.join(dir, 'blocked')), []);
  });

  test('a link at the final name is replaced, never written through', () => {
    const target = path.join(root, 'link-target');
    fs.writeFileSync(target, 'keep');
    const link = path.join(root, 'a-link');
    fs.symlinkSync(target, link);
    assert.equal(put(link, Buffer.from('new')).code, 0);
    assert.equal(fs.readFileSync(target, 'utf8'), 'keep');
    assert.ok(!fs.lstatSync(link).isSymbolicLink());
    assert.equal(fs.readFileSync(link, 'utf8'), 'new');
  });

  test('fewer or more bytes than announced: an error, and nothing is kept or replaced', () => {
    const dst = path.join(root, 'kept');
    fs.writeFileSync(dst, 'the old content');
    for (const size of [10, 2]) {
      const r = put(dst, Buffer.from('12345'), { size });
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`the bytes that arrived are not the ${size} the host file held`));
      assert.equal(fs.readFileSync(dst, 'utf8'), 'the old content');
      assert.deepEqual(temps(root), []);
    }
  });

  test('a missing folder is named, with what to do', () => {
    const r = put(path.join(root, 'no', 'such', 'x'), Buffer.from('a'));
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `the guest folder ${path.join(root, 'no', 'such')} does not exist: create it first\n`);
  });

  test('a name with quotes, spaces and $ is taken as it is', () => {
    const dst = path.join(root, `it's a $HOME "name"`);
    assert.equal(put(dst, Buffer.from('q')).code, 0);
    assert.equal(fs.readFileSync(dst, 'utf8'), 'q');
  });

  test('touchTime keeps nanoseconds', () => {
    assert.equal(touchTime(1_620_172_923_000_000_007n), '1620172923.000000007');
    assert.equal(touchTime(0n), '0.000000000');
  });

  test('GET_FILE_SCRIPT: a plain file is its header line and then its bytes', () => {
    const src = path.join(root, 'get.bin');
    const bytes = Buffer.from('line one\nline two\n');
    fs.writeFileSync(src, bytes);
    fs.chmodSync(src, 0o751);
    fs.utimesSync(src, 1_600_000_000.5, 1_620_172_923.25);
    const r = spawnSync('/bin/sh', ['-c', GET_FILE_SCRIPT, 'cove-cp', src]);
    assert.equal(r.status, 0, r.stderr.toString());
    const nl = r.stdout.indexOf(0x0a);
    assert.equal(r.stdout.subarray(0, nl).toString(), 'cove-cp 751 1600000000.500000000 1620172923.250000000');
    assert.ok(r.stdout.subarray(nl + 1).equals(bytes));
  });

  test('GET_FILE_SCRIPT: a link, a folder or nothing is "not a plain file" (exit 3), printing nothing', () => {
    const target = path.join(root, 'get-target');
    fs.writeFileSync(target, 'x');
    const link = path.join(root, 'get-link');
    fs.symlinkSync(target, link);
    for (const p of [link, root, path.join(root, 'absent')]) {
      const r = spawnSync('/bin/sh', ['-c', GET_FILE_SCRIPT, 'cove-cp', p]);
      assert.equal(r.status, 3, p);
      assert.equal(r.stdout.length, 0, p);
    }
  });
});
