// The chosen kernel (Debian trixie's generic linux-image-amd64, its config saved as
// test/fixtures/kernel.config) has every feature in kernel/features.json, and removing any one
// option makes the check fail naming that feature.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { checkKernelConfig, loadFeatures, parseKernelConfig } from '../../kernel/check';
import { findRepoRoot } from '../../vmm-host/image/recipe';

const root = findRepoRoot(__dirname);
const fixture = path.join(root, 'test', 'fixtures', 'kernel.config');
const config = fs.readFileSync(fixture, 'utf8');

test('the chosen kernel config has every feature', () => {
  const { missing } = checkKernelConfig(config);
  assert.deepEqual(missing.map((f) => f.name), []);
});

test('removing one option fails naming its feature (overlay)', () => {
  const broken = config.replace(/^CONFIG_OVERLAY_FS=m$/m, '# CONFIG_OVERLAY_FS is not set');
  assert.notEqual(broken, config);
  const { missing } = checkKernelConfig(broken);
  assert.deepEqual(missing.map((f) => f.name), ['overlay']);
});

test('every single option of every feature is load-bearing or has an alternative', () => {
  for (const f of loadFeatures()) {
    for (const group of f.all) {
      if (group.length > 1) continue;
      const opt = group[0];
      const broken = config.replace(new RegExp(`^CONFIG_${opt}=.*$`, 'm'), `# CONFIG_${opt} is not set`);
      const names = checkKernelConfig(broken).missing.map((m) => m.name);
      assert.ok(names.includes(f.name), `removing CONFIG_${opt} should fail ${f.name}`);
    }
  }
});

test('a module does not satisfy a built-in feature', () => {
  const broken = config.replace(/^CONFIG_SECCOMP_FILTER=y$/m, 'CONFIG_SECCOMP_FILTER=m');
  assert.deepEqual(checkKernelConfig(broken).missing.map((f) => f.name), ['seccomp']);
});

test('an alternative satisfies a group (IP_NF_TARGET_MASQUERADE for xt-masquerade)', () => {
  const alt = config.replace(/^CONFIG_NETFILTER_XT_TARGET_MASQUERADE=m$/m, '');
  assert.ok(parseKernelConfig(alt).get('IP_NF_TARGET_MASQUERADE'));
  assert.deepEqual(checkKernelConfig(alt).missing, []);
});

test('the CLI exits 0 on the fixture and 1 naming the missing feature', () => {
  const cli = path.join(root, 'out', 'kernel', 'check.js');
  execFileSync(process.execPath, [cli, fixture], { stdio: 'pipe' });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-kcheck-'));
  const broken = path.join(tmp, 'config');
  fs.writeFileSync(broken, config.replace(/^CONFIG_NET_9P_VIRTIO=m$/m, '').replace(/^CONFIG_VETH=m$/m, ''));
  try {
    execFileSync(process.execPath, [cli, broken], { stdio: 'pipe' });
    assert.fail('the check should have failed');
  } catch (e) {
    const err = e as { status: number; stderr: Buffer };
    assert.equal(err.status, 1);
    assert.match(err.stderr.toString(), /9p:/);
    assert.match(err.stderr.toString(), /veth:/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
