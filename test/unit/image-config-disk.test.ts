// The config disk encoding of docs/guest.md: magic, JSON, NUL padding to 1 MiB.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  CONFIG_DISK_MAGIC,
  CONFIG_DISK_SIZE,
  DEFAULT_NETWORK,
  GuestConfig,
  decodeConfigDisk,
  encodeConfigDisk,
  writeConfigDisk,
} from '../../contract/config-disk';

const cfg: GuestConfig = {
  version: 1,
  name: 't1',
  hostname: 't1',
  hostKey: '-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n',
  authorizedKeys: ['ssh-ed25519 AAAA cove'],
  mounts: [{ tag: 'cove-ws', type: 'virtiofs', path: '/home/me/project ünï', readonly: false }],
  network: { ...DEFAULT_NETWORK },
  resizeRoot: true,
  insecureRegistries: [],
};

test('encode: magic first, JSON up to the first NUL, 1 MiB exactly', () => {
  const disk = encodeConfigDisk(cfg);
  assert.equal(disk.length, CONFIG_DISK_SIZE);
  assert.equal(disk.subarray(0, 9).toString(), 'COVECFG1\n');
  assert.equal(CONFIG_DISK_MAGIC.length, 9);
  const end = disk.indexOf(0);
  assert.deepEqual(JSON.parse(disk.subarray(9, end).toString('utf8')), cfg);
  assert.ok(disk.subarray(end).every((b) => b === 0));
});

test('decode round-trips, and rejects a disk without the magic', () => {
  assert.deepEqual(decodeConfigDisk(encodeConfigDisk(cfg)), cfg);
  assert.throws(() => decodeConfigDisk(Buffer.alloc(1024)), /bad magic/);
});

test('a config too big for the disk is refused', () => {
  assert.throws(() => encodeConfigDisk({ ...cfg, authorizedKeys: ['x'.repeat(CONFIG_DISK_SIZE)] }), /config disk holds/);
});

test('writeConfigDisk writes mode 0600', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-cfg-'));
  try {
    const file = path.join(dir, 'cfg.raw');
    writeConfigDisk(file, cfg);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(file).size, CONFIG_DISK_SIZE);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
