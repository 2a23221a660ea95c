// coved refuses, at its start, a setting in its environment it cannot take: it exits 2 with a line
// naming the variable and what to set, before it takes the home's lock or touches a sandbox.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const COVED = path.join(__dirname, '..', '..', 'vmm-host', 'coved', 'main.js');

test('a COVE_GUEST_ASLR coved cannot take stops it at start, naming it and the values it takes', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-start-'));
  try {
    const r = spawnSync(process.execPath, [COVED], { env: { ...process.env, COVE_HOME: home, COVE_GUEST_ASLR: 'maybe' }, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /COVE_GUEST_ASLR=maybe is not a setting: set it to on .* or off, or unset it/);
    assert.ok(!fs.existsSync(path.join(home, 'coved.pid')), 'no lock taken');
    assert.ok(!fs.existsSync(path.join(home, 'coved.sock')), 'nothing served');
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});
