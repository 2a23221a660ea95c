// `npm run bench -- --only NAME` (defect #11): a selector that matches no row fails (exit 2) and
// lists the rows, instead of running nothing and passing. No VM: the check runs before anything boots.
import assert from 'node:assert/strict';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { ROW_IDS, unknownSelectors } from '../../bench/run';

const REPO = path.resolve(__dirname, '..', '..', '..');
const RUN = path.join(REPO, 'out', 'bench', 'run.js');

test('an unknown --only row exits 2 and lists the rows', () => {
  const r = child_process.spawnSync(process.execPath, [RUN, '--only', 'boot,no-such-row'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--only no-such-row: no such row or group/);
  for (const id of ['boot.cold', 'fs.virtiofs.seqread', 'life.restart']) assert.ok(r.stderr.includes(`  ${id}\n`), `lists ${id}`);
  assert.equal(r.stdout, '', 'nothing ran');
});

test('groups, rows and prefixes select rows; typos do not', () => {
  assert.deepEqual(unknownSelectors(['boot', 'mem', 'api', 'load', 'port', 'fs', 'fs.virtiofs', 'fs.9p', 'life', 'ssh', 'fs.virtiofs.seqread', 'api.ping.keepalive']), []);
  assert.deepEqual(unknownSelectors(['bot', 'fs.nfs', 'fs.9p.seqread.x', 'api.pin']), ['bot', 'fs.nfs', 'api.pin']);
});

test('the row list names every row the groups make', () => {
  // Each row is made with an `id: '…'` literal (or the fs rows' template): all of them must be listed.
  const ids = new Set<string>();
  for (const f of fs.readdirSync(path.join(REPO, 'bench')).filter((n) => n.endsWith('.ts'))) {
    for (const m of fs.readFileSync(path.join(REPO, 'bench', f), 'utf8').matchAll(/\bid: '([a-z0-9.]+)'/g)) ids.add(m[1]);
  }
  assert.ok(ids.size >= 10, `found ${ids.size} row ids`);
  for (const id of ids) assert.ok(ROW_IDS.includes(id), `${id} is missing from ROW_IDS in bench/run.ts`);
});
