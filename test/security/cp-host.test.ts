// `cove cp` against a hostile guest's SFTP server, run on this host (no VM): the real copy code
// (vmm-host/cli/copy-tree.ts) over a real SSH connection to a server that lies the way a guest root
// could. Each test names the attack and checks what is on the host afterwards. The same server runs
// inside a real guest in guest.test.ts; docs/security.md lists both.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import type { Client, SFTPWrapper, Server } from 'ssh2';
import { DEFAULT_COPY_LIMITS, WRITER_MIN_BYTES, copyLimitsFromEnv, getTree, putTree, type ContentWriter, type CopyLimits } from '../../vmm-host/cli/copy-tree';
import { SCENARIOS, hostileServer, type HostileLog } from './hostile-sftp';
import { listenUnix, newHostKey, sftpClient, tmpDir, treeOf } from './helpers';

interface Running {
  server: Server;
  client: Client;
  sftp: SFTPWrapper;
  log: HostileLog;
  dir: string;
}

async function start(scenario: keyof typeof SCENARIOS): Promise<Running> {
  const dir = tmpDir('cove-sec-cp-');
  const log: HostileLog = { requests: [] };
  const server = hostileServer(newHostKey(), SCENARIOS[scenario], log);
  const sock = await listenUnix(server, dir);
  const { client, sftp } = await sftpClient(sock);
  return { server, client, sftp, log, dir };
}

function stop(r: Running): void {
  r.client.end();
  r.server.close();
  fs.rmSync(r.dir, { recursive: true, force: true });
}

/** Files left under a temporary name anywhere under `dir`. */
const temps = (dir: string) => treeOf(dir).filter((l) => l.includes('.cove-cp-'));

/** Runs getTree of the guest's /src into `<dir>/out/dst`; resolves with the error, if any. */
async function pull(r: Running, limits: Partial<CopyLimits> = {}): Promise<{ err: Error | null; dst: string; notes: string[] }> {
  const dst = path.join(r.dir, 'out', 'dst');
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  const notes: string[] = [];
  const err = await getTree(r.sftp, '/src', dst, { ...DEFAULT_COPY_LIMITS, ...limits }, (m) => notes.push(m)).then(
    () => null,
    (e: unknown) => e as Error,
  );
  return { err, dst, notes };
}

describe('cove cp against a hostile SFTP server', { timeout: 120_000 }, () => {
  let r: Running | null = null;
  after(() => {
    if (r) stop(r);
  });

  test('a traversal name (`../../cove-canary.txt`) is refused; the canary beside the destination is unchanged', async () => {
    r = await start('traversal');
    // Where `<dst>/../../cove-canary.txt` lands.
    const canary = path.join(r.dir, 'cove-canary.txt');
    fs.writeFileSync(canary, 'canary\n');
    const { err, dst } = await pull(r);
    assert.ok(err, 'the copy fails');
    assert.equal(err.name, 'CopyError');
    assert.match(err.message, /"\.\.\/\.\.\/cove-canary\.txt".*single plain path component/);
    assert.equal(fs.readFileSync(canary, 'utf8'), 'canary\n', 'the canary is unchanged');
    assert.deepEqual(temps(r.dir), []);
    assert.ok(!treeOf(dst).some((l) => l.includes('canary')), 'nothing named canary in the destination');
    stop(r);
    r = null;
  });

  for (const [scenario, shown] of [
    ['slash', '"a/b"'],
    ['nul', '"a\\\\x00b"'],
  ] as const) {
    test(`a name with ${scenario === 'slash' ? 'a slash' : 'a NUL'} is refused and nothing is made for it`, async () => {
      r = await start(scenario);
      const { err, dst } = await pull(r);
      assert.ok(err);
      assert.ok(err.message.includes(shown), `the message names ${shown}: ${err.message}`);
      assert.deepEqual(treeOf(dst), [], 'the destination folder is empty');
      stop(r);
      r = null;
    });
  }

  test('a host link in the destination is never written through (CVE-2018-15664 class)', async () => {
    r = await start('write-through');
    const victim = path.join(r.dir, 'victim');
    fs.mkdirSync(victim);
    const dst = path.join(r.dir, 'out', 'dst');
    fs.mkdirSync(dst, { recursive: true });
    fs.symlinkSync(victim, path.join(dst, 'sub'));
    const { err } = await pull(r);
    assert.ok(err);
    assert.match(err.message, /"[^"]*dst\/sub" already exists on the host and is not a folder \(a symbolic link is never written through\)/);
    assert.deepEqual(fs.readdirSync(victim), [], 'nothing was written where the link points');
    assert.equal(fs.readlinkSync(path.join(dst, 'sub')), victim, 'the host link itself is left alone');
    stop(r);
    r = null;
  });

  test('a listing that never ends stops at the entry limit', async () => {
    r = await start('endless');
    const t0 = Date.now();
    const { err, dst } = await pull(r, { maxEntries: 2000 });
    assert.ok(err);
    assert.match(err.message, /more than 2000 entries; the copy stopped at .*COVE_CP_MAX_ENTRIES/);
    assert.deepEqual(temps(dst), []);
    assert.ok(Date.now() - t0 < 60_000);
    stop(r);
    r = null;
  });

  test('a folder that contains itself stops at the depth limit', async () => {
    r = await start('deep');
    const { err } = await pull(r);
    assert.ok(err);
    assert.match(err.message, new RegExp(`more than ${DEFAULT_COPY_LIMITS.maxDepth} folders deep \\(a loop\\?\\)`));
    stop(r);
    r = null;
  });

  test('a file without end stops at the size limit and leaves no file, whole or half, behind', async () => {
    r = await start('huge');
    const { err, dst } = await pull(r, { maxBytes: 8 * 1024 * 1024 });
    assert.ok(err);
    assert.match(err.message, /larger than 8388608 bytes; it stopped in "\/src\/huge\.bin", which was not kept/);
    assert.deepEqual(treeOf(dst), [], 'no huge.bin and no temporary file');
    stop(r);
    r = null;
  });

  test('a read that fails halfway names the file and leaves nothing under its name', async () => {
    r = await start('failing');
    const { err, dst } = await pull(r);
    assert.ok(err);
    assert.match(err.message, /reading the guest file "\/src\/half\.bin" failed: the guest failed this read on purpose/);
    assert.deepEqual(treeOf(dst), []);
    stop(r);
    r = null;
  });

  test('an SFTP packet over 256 KiB is refused by the client; the copy fails cleanly', async () => {
    r = await start('oversized');
    const { err, dst } = await pull(r);
    assert.ok(err);
    assert.match(err.message, /big-packet\.bin|Packet length/);
    assert.ok(fs.existsSync(dst) ? treeOf(dst).every((l) => !l.includes('big-packet')) : true);
    stop(r);
    r = null;
  });

  test('links are copied as links: three links and one file, none followed', async () => {
    r = await start('links');
    const { err, dst } = await pull(r);
    assert.equal(err, null, err?.message);
    assert.deepEqual(treeOf(dst), ['d sub', 'f file.txt', 'l dangling -> /nonexistent', 'l etc-link -> /etc', 'l sub/loop -> ..']);
    assert.ok(!r.log.requests.some((q) => q.startsWith('OPEN ') && !q.endsWith('file.txt')), `only file.txt was opened: ${r.log.requests.join(', ')}`);
    stop(r);
    r = null;
  });

  test('host to guest: a host link to a secret is sent as a link, never its content', async () => {
    r = await start('links');
    const secret = path.join(r.dir, 'secret.txt');
    fs.writeFileSync(secret, 'HOST SECRET\n');
    const src = path.join(r.dir, 'project');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'sub', 'a.txt'), 'hello\n');
    fs.symlinkSync(secret, path.join(src, 'secret-link'));
    fs.symlinkSync(r.dir, path.join(src, 'sub', 'up'));
    await putTree(r.sftp, src, '/dest/project', DEFAULT_COPY_LIMITS, () => undefined);
    const q = r.log.requests;
    assert.ok(q.includes(`SYMLINK /dest/project/secret-link -> ${secret}`), q.join('\n'));
    assert.ok(q.includes(`SYMLINK /dest/project/sub/up -> ${r.dir}`), q.join('\n'));
    const written = q.filter((l) => l.startsWith('WRITE ')).reduce((n, l) => n + Number(l.slice(6)), 0);
    assert.equal(written, 'hello\n'.length, 'only a.txt was sent');
    // The file went under a temporary name first and was renamed into place.
    assert.ok(q.some((l) => /^RENAME \/dest\/project\/sub\/\.cove-cp-[0-9a-f]+\.tmp \/dest\/project\/sub\/a\.txt$/.test(l)), q.join('\n'));
    stop(r);
    r = null;
  });

  test('host to guest with a content writer: a large file goes to it under its temporary name, small ones and a declined one over SFTP; its failure leaves nothing under the name', async () => {
    r = await start('links');
    const src = path.join(r.dir, 'p');
    fs.mkdirSync(src);
    const big = Buffer.alloc(WRITER_MIN_BYTES + 5, 0x41);
    fs.writeFileSync(path.join(src, 'big.bin'), big);
    fs.writeFileSync(path.join(src, 'small.txt'), 'small\n');
    const calls: Array<{ size: number; guestPath: string; same: boolean }> = [];
    const writer: ContentWriter = (fd, size, guestPath) => {
      const got = Buffer.alloc(size);
      fs.readSync(fd, got, 0, size, 0);
      calls.push({ size, guestPath, same: got.equals(big) });
      return Promise.resolve(true);
    };
    const sent = (q: string[]) => q.filter((l) => l.startsWith('WRITE ')).reduce((n, l) => n + Number(l.slice(6)), 0);
    await putTree(r.sftp, src, '/dest/p', DEFAULT_COPY_LIMITS, () => undefined, writer);
    assert.equal(calls.length, 1, 'only the large file went to the writer');
    assert.equal(calls[0].size, big.length);
    assert.ok(calls[0].same, 'the writer read the whole file from its descriptor');
    assert.match(calls[0].guestPath, /^\/dest\/p\/\.cove-cp-[0-9a-f]+\.tmp$/);
    assert.ok(r.log.requests.includes(`RENAME ${calls[0].guestPath} /dest/p/big.bin`), r.log.requests.join('\n'));
    assert.equal(sent(r.log.requests), 'small\n'.length, 'SFTP carried only the small file');
    // A writer that declines (exec streams not available): SFTP carries the content too.
    r.log.requests.length = 0;
    await putTree(r.sftp, src, '/dest/q', DEFAULT_COPY_LIMITS, () => undefined, () => Promise.resolve(false));
    assert.equal(sent(r.log.requests), big.length + 'small\n'.length);
    // A writer that fails: the copy stops naming the file, and the temporary file is removed.
    r.log.requests.length = 0;
    const err = await putTree(r.sftp, path.join(src, 'big.bin'), '/dest/r.bin', DEFAULT_COPY_LIMITS, () => undefined, () => Promise.reject(new Error('cat in the guest exited with 1: No space left on device'))).then(
      () => null,
      (e: unknown) => e as Error,
    );
    assert.ok(err, 'the copy failed');
    assert.match(err.message, /\/dest\/r\.bin[\s\S]*No space left on device/);
    assert.ok(r.log.requests.some((l) => /^REMOVE \/dest\/\.cove-cp-[0-9a-f]+\.tmp$/.test(l)), r.log.requests.join('\n'));
    assert.ok(!r.log.requests.some((l) => l.startsWith('RENAME ')), 'nothing was renamed into place');
    stop(r);
    r = null;
  });

  test('a guest name with terminal escapes is shown escaped', async () => {
    r = await start('escape');
    const { err } = await pull(r);
    assert.ok(err);
    // eslint-disable-next-line no-control-regex
    assert.ok(!/[\u0000-\u001f]/.test(err.message), `no control character in ${JSON.stringify(err.message)}`);
    assert.ok(err.message.includes('\\\\x1b]0;owned\\\\x07/x'), err.message);
    stop(r);
    r = null;
  });
});

describe('copy limits from the environment', () => {
  test('a bad value is an error that names the variable', () => {
    assert.throws(() => copyLimitsFromEnv({ COVE_CP_MAX_BYTES: 'lots' }), /COVE_CP_MAX_BYTES must be a positive whole number/);
    assert.deepEqual(copyLimitsFromEnv({ COVE_CP_MAX_DEPTH: '3' }), { ...DEFAULT_COPY_LIMITS, maxDepth: 3 });
  });
});
