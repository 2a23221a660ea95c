// Sandbox keys always read back: ssh2's ed25519 generator now and then writes a private key its own
// parser rejects (about 1 in 300 here), and a sandbox with such a key could never be reached.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { utils } from 'ssh2';
import { generateKeys, readKeys } from '../../vmm-host/coved/keys';

test('1,000 generated sandbox key sets all read back', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-keys-'));
  try {
    for (let i = 0; i < 1000; i++) {
      const keys = generateKeys(dir, `k${i}`);
      assert.doesNotThrow(() => readKeys(dir), `key set ${i}: the host key reads back`);
      assert.ok(!(utils.parseKey(keys.clientPrivate) instanceof Error), `key set ${i}: the client key reads back`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
