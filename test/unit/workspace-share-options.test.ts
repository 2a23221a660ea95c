// The workspace share's cache modes (docs/workspace-fs.md): the two copies of the guest's 9p mount
// options (the agent's and cove-init's) are the same string, and neither the 9p options nor
// virtiofsd's argv turns on a mode that was measured to show the guest stale content for good.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { NINEP_OPTIONS } from '../../agent/mounts';
import { VIRTIOFSD_CACHE, buildVirtiofsdArgv } from '../../vmm-host/driver/qemu';
import { specFromLayout } from '../../vmm-host/driver/spec';

const REPO = path.resolve(__dirname, '..', '..', '..');
const INIT_LIB = path.join(REPO, 'tier-docker', 'rootfs', 'usr', 'lib', 'cove', 'init-lib.sh');

const options = (s: string) => new Map(s.split(',').map((o) => [o.split('=')[0], o.split('=')[1] ?? ''] as const));

test('9p: cache=none, the largest msize the virtio transport takes, 9p2000.L', () => {
  const o = options(NINEP_OPTIONS);
  assert.equal(o.get('cache'), 'none', 'loose, readahead and mmap were measured stale (docs/workspace-fs.md)');
  assert.equal(o.get('msize'), '512000');
  assert.equal(o.get('version'), '9p2000.L');
  assert.equal(o.get('trans'), 'virtio');
  assert.ok(!o.has('ignoreqv'), 'ignoreqv would let cached pages outlive a host edit');
});

test("cove-init mounts 9p with the agent's options, every time it mounts 9p", () => {
  const lib = fs.readFileSync(INIT_LIB, 'utf8');
  const mounts = [...lib.matchAll(/mount -t 9p -o "\$ro,([^"]+)"/g)].map((m) => m[1]);
  assert.ok(mounts.length >= 2, 'the folder and the file mounts');
  for (const m of mounts) assert.equal(m, NINEP_OPTIONS);
});

test('virtiofsd: cache=auto (1 s timeouts), no writeback, no cache=always', () => {
  assert.equal(VIRTIOFSD_CACHE, 'auto');
  const argv = buildVirtiofsdArgv(
    specFromLayout({ imageDir: '/h/images/docker-abc', vmDir: '/h/vms/t1', cpus: 2, memoryMiB: 1024, network: 'user', accel: 'kvm', tscKhz: 2445428, share: { type: 'virtiofs', hostPath: '/home/me/p', readonly: false } }),
  );
  const opts = argv.flatMap((a, i) => (argv[i - 1] === '-o' ? [a] : []));
  assert.deepEqual(opts, ['source=/home/me/p', 'cache=auto']);
  assert.ok(!argv.some((a) => /writeback|cache=always|timeout=/.test(a)));
});
