// scripts/test.sh's closing line counts every tier's passed, failed and skipped tests (defect #10):
// skipped tests used to vanish from it.
import assert from 'node:assert/strict';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const REPO = path.resolve(__dirname, '..', '..', '..');

function summary(log: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-summary-'));
  try {
    const file = path.join(dir, 'test.log');
    fs.writeFileSync(file, log);
    const r = child_process.spawnSync('bash', [path.join(REPO, 'scripts', 'test.sh'), 'summary', file], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('the closing line counts skipped tests from node and from the e2e runner', () => {
  const log = ['▶ a suite', 'ℹ tests 13', 'ℹ pass 10', 'ℹ fail 1', 'ℹ skipped 2', '=== e2e tests ===', '4 passed, 0 failed, 3 skipped', ''].join('\n');
  assert.equal(summary(log), 'tests: 14 passed, 1 failed, 5 skipped');
});

test('a tier without skipped tests counts zero', () => {
  assert.equal(summary('ℹ pass 3\nℹ fail 0\nℹ skipped 0\n2 passed, 1 failed\n'), 'tests: 5 passed, 1 failed, 0 skipped');
});
