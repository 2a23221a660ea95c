// The shared workspace stays coherent both ways (docs/workspace-fs.md): a file the host edits — in
// place, or saved the way editors save, by a rename over it — reads with its new content in the
// guest and in a container that bind-mounts the folder; files the host creates, renames and
// deletes show in the guest's listing; and whatever the guest writes, renames or deletes is on the
// host as soon as the command that did it has returned. This is what the share's cache modes are
// chosen for: a mode that caches metadata or file pages without asking the host (9p cache=loose,
// virtiofsd cache=always) fails the host-to-guest cases for good, not for a second.
// Boots a warm 9p sandbox (what `cove up` gives) and, when virtiofsd is there, a cold virtio-fs one.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findVirtiofsd } from '../../vmm-host/driver/tools';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { SCRATCH, cove, covedPid, docker, ok, resetTestHome, waitUntil, workspace } from '../helpers/harness';

/** How long the guest may take to see a host change. The modes chosen see it within ~1 s; the
 * rest is `cove exec`'s own round trip under TCG on a busy machine. A caching mode never sees it. */
const SEEN_WITHIN_MS = 20_000;

async function guestRead(name: string, file: string): Promise<string | null> {
  const r = await cove(['exec', name, '--', 'sh', '-c', `cat '${file}' 2>/dev/null || echo '<missing>'`], 60_000);
  return r.code === 0 ? r.stdout : null;
}

async function guestList(name: string, dir: string): Promise<string> {
  return ok(await cove(['exec', name, '--', 'ls', '-1', dir], 60_000), `ls ${dir} in the guest`).stdout;
}

/** Waits until the guest reads `want` from `file`; returns how long it took (host clock). */
async function seenInGuest(name: string, file: string, want: string, what: string): Promise<number> {
  const t0 = Date.now();
  await waitUntil(`the guest of ${name} to see ${what}`, SEEN_WITHIN_MS, async () => (await guestRead(name, file)) === want, 200);
  return Date.now() - t0;
}

function coherencyCases(name: string, getWs: () => string, opts: { container?: () => { ctx: string; id: string } }): void {
  test(`${name}: host edits reach the guest (in place, same size and not; rename over; append)`, { timeout: 10 * 60_000 }, async () => {
    const ws = getWs();
    const f = path.join(ws, 'edit.txt');
    fs.writeFileSync(f, 'v0-aaaa\n');
    await seenInGuest(name, f, 'v0-aaaa\n', 'the first version');
    // The guest has read it now (its caches hold it, if it caches); then the host edits it.
    fs.writeFileSync(f, 'v1-bbbb\n');
    const sameSize = await seenInGuest(name, f, 'v1-bbbb\n', 'an in-place edit of the same size');
    fs.writeFileSync(f, 'v2-cccccccc\n');
    await seenInGuest(name, f, 'v2-cccccccc\n', 'a longer in-place edit');
    fs.writeFileSync(`${f}.tmp`, 'v3-d\n');
    fs.renameSync(`${f}.tmp`, f);
    const renamed = await seenInGuest(name, f, 'v3-d\n', "an editor's save (write a temporary file, rename it over)");
    fs.appendFileSync(f, 'more\n');
    await seenInGuest(name, f, 'v3-d\nmore\n', 'an append');
    console.log(`# ${name}: same-size edit seen after ${sameSize} ms, rename-over after ${renamed} ms (cove exec round trips included)`);
  });

  test(`${name}: host creates, renames and deletes show in the guest`, { timeout: 10 * 60_000 }, async () => {
    const ws = getWs();
    const dir = path.join(ws, 'dir');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'a'), 'a\n');
    await waitUntil('the guest to list a', SEEN_WITHIN_MS, async () => (await guestList(name, dir)) === 'a\n', 200);
    fs.writeFileSync(path.join(dir, 'b'), 'b\n');
    await waitUntil('the guest to list a new file', SEEN_WITHIN_MS, async () => (await guestList(name, dir)) === 'a\nb\n', 200);
    fs.renameSync(path.join(dir, 'b'), path.join(dir, 'c'));
    await waitUntil('the guest to list a renamed file', SEEN_WITHIN_MS, async () => (await guestList(name, dir)) === 'a\nc\n', 200);
    fs.rmSync(path.join(dir, 'c'));
    await waitUntil('the guest to list without a deleted file', SEEN_WITHIN_MS, async () => (await guestList(name, dir)) === 'a\n', 200);
    await seenInGuest(name, path.join(dir, 'c'), '<missing>\n', 'a deleted file gone');
  });

  test(`${name}: what the guest writes, renames and deletes is on the host when the command returns`, { timeout: 10 * 60_000 }, async () => {
    const ws = getWs();
    const exec = async (cmd: string) => ok(await cove(['exec', name, '--', 'sh', '-c', `cd '${ws}' && ${cmd}`], 60_000), cmd);
    const read = (p: string) => (fs.existsSync(path.join(ws, p)) ? fs.readFileSync(path.join(ws, p), 'utf8') : null);
    await exec('echo built > out.txt');
    assert.equal(read('out.txt'), 'built\n', 'a file the guest wrote');
    await exec('echo b2 > out.txt');
    assert.equal(read('out.txt'), 'b2\n', 'a file the guest overwrote, shorter');
    await exec('echo more >> out.txt');
    assert.equal(read('out.txt'), 'b2\nmore\n', 'a file the guest appended to');
    await exec('head -c 1048576 /dev/zero > big && mv out.txt out2.txt');
    assert.equal(fs.statSync(path.join(ws, 'big')).size, 1048576, '1 MiB the guest wrote');
    assert.equal(read('out.txt'), null, 'the guest renamed it away');
    assert.equal(read('out2.txt'), 'b2\nmore\n', 'to its new name');
    await exec('rm out2.txt big');
    assert.equal(read('out2.txt'), null, 'a file the guest deleted');
  });

  if (opts.container) {
    test(`${name}: a container that bind-mounts the folder sees host edits and writes to the host`, { timeout: 10 * 60_000 }, async () => {
      const ws = getWs();
      const { ctx, id } = opts.container!();
      const f = path.join(ws, 'ctr.txt');
      const inCtr = async (cmd: string) => ok(await docker(ctx, ['exec', id, 'sh', '-c', cmd], 120_000), `docker exec ${cmd}`).stdout;
      fs.writeFileSync(f, 'c0-aaaa\n');
      await waitUntil('the container to read the first version', SEEN_WITHIN_MS * 2, async () => (await inCtr(`cat ${f}`)) === 'c0-aaaa\n', 200);
      fs.writeFileSync(f, 'c1-bbbb\n');
      await waitUntil('the container to read an in-place edit', SEEN_WITHIN_MS * 2, async () => (await inCtr(`cat ${f}`)) === 'c1-bbbb\n', 200);
      fs.writeFileSync(`${f}.tmp`, 'c2\n');
      fs.renameSync(`${f}.tmp`, f);
      await waitUntil('the container to read a rename-over', SEEN_WITHIN_MS * 2, async () => (await inCtr(`cat ${f}`)) === 'c2\n', 200);
      await inCtr(`echo from-container > ${path.join(ws, 'ctr-out.txt')}`);
      assert.equal(fs.readFileSync(path.join(ws, 'ctr-out.txt'), 'utf8'), 'from-container\n', 'a file the container wrote');
    });
  }
}

describe('the shared workspace is coherent both ways', { timeout: 60 * 60_000 }, () => {
  const P9 = 'coh9p';
  const VFS = 'cohvfs';
  let ws9p = '';
  let wsVfs = '';
  let image = '';
  let ctr = '';

  before(() => {
    resetTestHome();
    ws9p = workspace(P9);
    wsVfs = workspace(VFS);
  });

  after(async () => {
    for (const n of [P9, VFS]) await cove(['rm', '--force', n], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('a warm 9p sandbox comes up, with a container bind-mounting its folder', { timeout: 30 * 60_000 }, async () => {
    ok(await cove(['up', ws9p, '--name', P9, '--mount-type', '9p'], 20 * 60_000), 'cove up (9p)');
    const tar = path.join(SCRATCH, 'busybox-coherency.tar');
    fs.mkdirSync(SCRATCH, { recursive: true });
    image = makeBusyboxImage(tar);
    ok(await docker(`cove-${P9}`, ['load', '-i', tar], 10 * 60_000), 'docker load');
    ctr = ok(await docker(`cove-${P9}`, ['run', '-d', '-v', `${ws9p}:${ws9p}`, image, 'sleep', '3600'], 180_000), 'docker run -v').stdout.trim();
  });

  coherencyCases(P9, () => ws9p, { container: () => ({ ctx: `cove-${P9}`, id: ctr }) });

  const noVfs = findVirtiofsd() === null || process.getuid?.() !== 0 ? 'virtiofsd is missing here (or not root): no virtio-fs sandbox' : false;

  test('a cold virtio-fs sandbox comes up', { timeout: 30 * 60_000, skip: noVfs }, async () => {
    await cove(['rm', '--force', P9], 180_000); // one VM at a time on a small machine
    ok(await cove(['up', wsVfs, '--name', VFS, '--mount-type', 'virtiofs'], 20 * 60_000), 'cove up (virtiofs)');
  });

  if (!noVfs) coherencyCases(VFS, () => wsVfs, {});
});
