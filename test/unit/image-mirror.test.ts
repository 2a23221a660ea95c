// The mirror comes from COVE_DEBIAN_MIRROR or the host's apt configuration, never from the repo.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { deb822Uris, findDebianMirror, oneLineUris } from '../../vmm-host/image/mirror';
import { isMirrorError } from '../../vmm-host/image/errors';

const M = 'http://mirror.invalid/debian';
const S = 'http://mirror.invalid/debian-security';

test('deb822 and one-line sources', () => {
  assert.deepEqual(deb822Uris(`Types: deb\nURIs: ${M}\nSuites: bookworm\n\nTypes: deb\nURIs: ${S}\n`), [M, S]);
  assert.deepEqual(deb822Uris(`Types: deb-src\nURIs: ${M}\n`), []);
  assert.deepEqual(oneLineUris(`# c\ndeb [arch=amd64] ${M} bookworm main\ndeb ${S} bookworm-security main\n`), [M, S]);
});

test('picks the non-security debian entry; env overrides; none is a clear error', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-apt-'));
  try {
    fs.mkdirSync(path.join(dir, 'sources.list.d'));
    fs.writeFileSync(path.join(dir, 'sources.list.d', 'debian.sources'), `Types: deb\nURIs: ${S}\n\nTypes: deb\nURIs: ${M}/\n`);
    assert.equal(findDebianMirror({}, dir), M);
    assert.equal(findDebianMirror({ COVE_DEBIAN_MIRROR: 'http://x.invalid/debian/' }, dir), 'http://x.invalid/debian');
    fs.rmSync(path.join(dir, 'sources.list.d', 'debian.sources'));
    try {
      findDebianMirror({}, dir);
      assert.fail('expected an error');
    } catch (e) {
      assert.ok(isMirrorError(e));
      assert.match((e as Error & { hint: string }).hint, /COVE_DEBIAN_MIRROR/);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
