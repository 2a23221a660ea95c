// Cutting the compressed kernel out of a bzImage: the boot header's payload fields first, a magic
// search second; the 4-byte size trailer is not part of the stream.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findPayload } from '../../vmm-host/image/kernel-source';

const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const XZ = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

function fakeBzImage(magic: Buffer, setupSects: number, payloadOffset: number, payloadLen: number): Buffer {
  const b = Buffer.alloc((setupSects + 1) * 512 + payloadOffset + payloadLen + 100, 0);
  b[0x1f1] = setupSects;
  b.write('HdrS', 0x202, 'ascii');
  b.writeUInt32LE(payloadOffset, 0x248);
  b.writeUInt32LE(payloadLen, 0x24c);
  magic.copy(b, (setupSects + 1) * 512 + payloadOffset);
  return b;
}

test('the boot header locates a zstd payload and drops the size trailer', () => {
  const bz = fakeBzImage(ZSTD, 39, 716, 5000);
  assert.deepEqual(findPayload(bz), { codec: 'zstd', start: 40 * 512 + 716, end: 40 * 512 + 716 + 5000 - 4 });
});

test('an xz payload is found the same way', () => {
  const bz = fakeBzImage(XZ, 30, 100, 800);
  assert.equal(findPayload(bz)?.codec, 'xz');
});

test('without a usable header, the first magic is used; nothing found is null', () => {
  const b = Buffer.alloc(4096, 0);
  XZ.copy(b, 1000);
  assert.deepEqual(findPayload(b), { codec: 'xz', start: 1000, end: 4096 });
  assert.equal(findPayload(Buffer.alloc(4096, 0)), null);
});
