// Extra mounts (vmm-host/coved/mounts.ts and contract/mount-spec.ts): what `--mount` accepts and
// refuses, the fixed slots a VM always has, and the file hard links a start makes.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { GUEST } from '../../contract/guest';
import { formatMountSpec, parseMountSpec } from '../../contract/mount-spec';
import { buildQemuArgv } from '../../vmm-host/driver/qemu';
import { checkMounts, guestMounts, prepareMounts, slotShares } from '../../vmm-host/coved/mounts';
import { CoveError } from '../../contract/errors';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'cove-mounts-'));

test('mount specs: HOST[:GUEST][:ro], relative and ~ paths, and back', () => {
  assert.deepEqual(parseMountSpec('../other', '/w/proj', '/home/me'), { host: '/w/other' });
  assert.deepEqual(parseMountSpec('~/.ssh:/root/.ssh:ro', '/w', '/home/me'), { host: '/home/me/.ssh', guest: '/root/.ssh', readonly: true });
  assert.deepEqual(parseMountSpec('/a:rw', '/w', '/h'), { host: '/a' });
  assert.throws(() => parseMountSpec('/a:/b:/c', '/w', '/h'), /not HOST\[:GUEST\]\[:ro\]/);
  assert.throws(() => parseMountSpec('/a:b', '/w', '/h'), /must be absolute/);
  assert.equal(formatMountSpec({ host: '/a', guest: '/a', readonly: false }), '/a');
  assert.equal(formatMountSpec({ host: '/a', guest: '/b', readonly: true }), '/a:/b:ro');
});

test('checkMounts: folders and files resolved; system paths, overlaps, state and bad input refused with what to do', () => {
  const root = tmp();
  const home = path.join(root, 'cove-home');
  const ws = path.join(root, 'ws');
  const other = path.join(root, 'other');
  const file = path.join(root, 'gitconfig');
  for (const d of [home, ws, other]) fs.mkdirSync(d);
  fs.writeFileSync(file, 'x');
  assert.deepEqual(checkMounts([{ host: other }, { host: file, guest: '/root/.gitconfig', readonly: true }], ws, home), [
    { host: other, guest: other, readonly: false, kind: 'dir' },
    { host: file, guest: '/root/.gitconfig', readonly: true, kind: 'file' },
  ]);
  const refused: Array<[unknown, RegExp]> = [
    [[{ host: path.join(root, 'nope') }], /does not exist/],
    [[{ host: other, guest: '/etc/ssl' }], /would cover the guest's own \/etc/],
    [[{ host: other, guest: '/var' }], /would cover the guest's own \/var\/lib\/docker/],
    [[{ host: other, guest: '/' }], /would cover/],
    [[{ host: other, guest: `${ws}/sub` }], /overlaps the workspace/],
    [[{ host: other }, { host: file, guest: `${other}/f` }], /overlaps the mount of/],
    [[{ host: home }], /Cove's own state/],
    [[{ host: '/' }], /whole host file system/],
    [[{ host: 'relative' }], /not absolute/],
    [[{ host: `${other}:x` }], /contains ':'/],
    [[{ host: `${other}\n` }], /control characters/],
    [[{ host: 42 }], /"host" must be a path/],
    ['nope', /must be a list/],
    [Array.from({ length: GUEST.extraMountSlots + 1 }, () => ({ host: other })), /at most 8/],
  ];
  for (const [input, pattern] of refused) {
    assert.throws(() => checkMounts(input, ws, home), (e: unknown) => e instanceof CoveError && pattern.test(e.message), `${JSON.stringify(input)} → ${String(pattern)}`);
  }
  fs.rmSync(root, { recursive: true, force: true });
});

test('slots: every VM has the same 9p devices whatever it shares; files are hard links made afresh', () => {
  const root = tmp();
  const vm = path.join(root, 'vm');
  const other = path.join(root, 'other');
  const file = path.join(root, 'gitconfig');
  fs.mkdirSync(vm);
  fs.mkdirSync(other);
  fs.writeFileSync(file, 'one');
  const mounts = [
    { host: other, guest: other, readonly: false, kind: 'dir' as const },
    { host: file, guest: '/root/.gitconfig', readonly: true, kind: 'file' as const },
  ];
  const slots = slotShares(vm, mounts, path.join(vm, 'empty'));
  assert.equal(slots.length, GUEST.extraMountSlots);
  assert.deepEqual(slots.slice(0, 3), [
    { hostPath: other, readonly: false },
    { hostPath: path.join(vm, 'files', '1'), readonly: true },
    { hostPath: path.join(vm, 'empty'), readonly: true },
  ]);
  assert.deepEqual(guestMounts(mounts).map((m) => [m.tag, m.path, m.file]), [['cove-m0', other, undefined], ['cove-m1', '/root/.gitconfig', '.gitconfig']]);
  prepareMounts(vm, mounts, 't');
  const link = path.join(vm, 'files', '1', '.gitconfig');
  assert.equal(fs.statSync(link).ino, fs.statSync(file).ino, 'a hard link of the file');
  // An editor that saves by renaming replaces the file: the next start links the new one.
  fs.writeFileSync(`${file}.new`, 'two');
  fs.renameSync(`${file}.new`, file);
  prepareMounts(vm, mounts, 't');
  assert.equal(fs.readFileSync(link, 'utf8'), 'two');
  fs.rmSync(other, { recursive: true });
  assert.throws(() => prepareMounts(vm, mounts, 't'), /shared folder .* of sandbox t is gone/);
  // The argv: 8 extra 9p devices, tagged cove-m0…, read-only where asked.
  const argv = buildQemuArgv({
    dir: vm, kernel: '/k', initrd: '/i', disk: '/d', configDisk: '/c', cpus: 1, memoryMiB: 512, accel: 'tcg', network: 'user',
    share: { type: '9p', hostPath: '/ws', readonly: false }, extraShares: slots,
  }).join(' ');
  assert.equal(argv.match(/virtio-9p-device,fsdev=m\d,mount_tag=cove-m\d/g)?.length, 8);
  assert.match(argv, /-fsdev local,id=m1,path=[^ ]*files\/1,security_model=none,readonly=on/);
  fs.rmSync(root, { recursive: true, force: true });
});
