// The initramfs module closure: dependencies first, each once, built-ins skipped, unknowns named.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { moduleClosure, moduleName, parseModulesBuiltin, parseModulesDep } from '../../vmm-host/image/modules';
import { cpioNewc, S_IFREG, S_IFCHR } from '../../vmm-host/image/cpio';

const DEP = `
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_mmio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/a.ko.xz: kernel/b.ko.xz
kernel/b.ko.xz: kernel/a.ko.xz
`;

test('moduleName normalizes files and dashes', () => {
  assert.equal(moduleName('kernel/fs/ext4/ext4.ko.xz'), 'ext4');
  assert.equal(moduleName('virtio-blk'), 'virtio_blk');
  assert.equal(moduleName('x.ko.zst'), 'x');
});

test('closure puts every module after its dependencies, once each', () => {
  const order = moduleClosure(parseModulesDep(DEP), ['virtio_mmio', 'virtio-blk', 'ext4']).map(moduleName);
  assert.deepEqual(order, ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk', 'crc16', 'mbcache', 'jbd2', 'ext4']);
  for (const [i, m] of order.entries()) {
    const deps = parseModulesDep(DEP).deps.get(m) ?? [];
    for (const d of deps) assert.ok(order.indexOf(d) < i, `${d} before ${m}`);
  }
});

test('built-in modules are skipped; unknown modules are an error naming them', () => {
  const builtin = parseModulesBuiltin('kernel/drivers/virtio/virtio_pci.ko\n');
  assert.deepEqual(moduleClosure(parseModulesDep(DEP), ['virtio_pci'], builtin), []);
  assert.throws(() => moduleClosure(parseModulesDep(DEP), ['nope']), /module nope not found/);
});

test('a dependency cycle is reported', () => {
  assert.throws(() => moduleClosure(parseModulesDep(DEP), ['a']), /cycle: a -> b -> a/);
});

test('cpio newc: headers, alignment, device nodes, trailer', () => {
  const out = cpioNewc([
    { name: 'init', mode: S_IFREG | 0o755, data: Buffer.from('#!/bin/sh\n') },
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 },
  ]);
  assert.equal(out.subarray(0, 6).toString(), '070701');
  assert.equal(out.length % 4, 0);
  const text = out.toString('latin1');
  assert.ok(text.includes('init\0'));
  assert.ok(text.includes('TRAILER!!!\0'));
  // The console entry: rdevmajor 5, rdevminor 1 (fields 10 and 11 of the header).
  const i = text.indexOf('070701', 6);
  const fields = text.slice(i + 6, i + 6 + 13 * 8).match(/.{8}/g)!.map((h) => Number.parseInt(h, 16));
  assert.equal(fields[1], S_IFCHR | 0o600);
  assert.equal(fields[9], 5);
  assert.equal(fields[10], 1);
});
