// coved's image builds (defect #8): a `--force` build asked for while a build runs is not swallowed
// by the running build, and every caller gets progress under its own token. The builds here are
// real asynchronous work (timers) standing in for the hours of debootstrap: the scheduling is what
// is tested.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ImageBuilds } from '../../vmm-host/image/builds';

interface Done {
  n: number;
  force: boolean;
}

/** A build that takes `ms`, reports two steps, and records each run; `failFirst` fails run 1. */
function builds(ms = 30, failFirst = false) {
  const runs: Done[] = [];
  let active = 0;
  let maxActive = 0;
  const b = new ImageBuilds<Done>(async (force, _fullVerify, progress) => {
    const n = runs.length + 1;
    runs.push({ n, force });
    active++;
    maxActive = Math.max(maxActive, active);
    progress('debootstrap', `run ${n}`, 0.1);
    await new Promise((r) => setTimeout(r, ms));
    progress('pack', `run ${n}`, 1);
    active--;
    if (failFirst && n === 1) throw new Error('run 1 failed');
    return { n, force };
  });
  return { b, runs, maxActive: () => maxActive };
}

test('callers without force share the running build, each with its progress', async () => {
  const { b, runs } = builds();
  const seen: Record<string, string[]> = { a: [], b: [] };
  const [x, y] = await Promise.all([
    b.run({ force: false, fullVerify: false, onProgress: (s, m) => seen.a.push(`${s} ${m}`) }),
    b.run({ force: false, fullVerify: false, onProgress: (s, m) => seen.b.push(`${s} ${m}`) }),
  ]);
  assert.deepEqual([x, y], [{ n: 1, force: false }, { n: 1, force: false }]);
  assert.equal(runs.length, 1);
  assert.deepEqual(seen.a, ['debootstrap run 1', 'pack run 1']);
  assert.deepEqual(seen.b, ['debootstrap run 1', 'pack run 1']);
  assert.equal(b.busy, false);
});

test('a forced build during a build that is not forced runs after it, forced, with its own progress', async () => {
  const { b, runs, maxActive } = builds();
  const forcedSeen: string[] = [];
  const first = b.run({ force: false, fullVerify: false });
  await new Promise((r) => setTimeout(r, 5));
  const forced = b.run({ force: true, fullVerify: false, onProgress: (s, m) => forcedSeen.push(`${s} ${m}`) });
  assert.equal(b.busy, true);
  assert.deepEqual(await first, { n: 1, force: false });
  assert.deepEqual(await forced, { n: 2, force: true }, 'the --force request got a forced build');
  assert.deepEqual(runs, [{ n: 1, force: false }, { n: 2, force: true }]);
  assert.equal(maxActive(), 1, 'never two builds at once');
  assert.deepEqual(forcedSeen, ['debootstrap run 2', 'pack run 2'], "the forced caller's progress is its own build's");
});

test('forced callers that arrive together share one forced build; a forced build serves later callers', async () => {
  const { b, runs } = builds();
  const first = b.run({ force: false, fullVerify: false });
  const f1 = b.run({ force: true, fullVerify: false });
  const f2 = b.run({ force: true, fullVerify: true });
  const results = await Promise.all([first, f1, f2]);
  assert.deepEqual(results.map((r) => r.n), [1, 2, 2]);
  assert.equal(runs.length, 2);
  const g1 = b.run({ force: true, fullVerify: false });
  const g2 = b.run({ force: true, fullVerify: false });
  const g3 = b.run({ force: false, fullVerify: false });
  assert.deepEqual((await Promise.all([g1, g2, g3])).map((r) => r.n), [3, 3, 3]);
});

test('a failed build fails its callers only; the queued forced build still runs', async () => {
  const { b } = builds(30, true);
  const first = b.run({ force: false, fullVerify: false });
  const forced = b.run({ force: true, fullVerify: false });
  await assert.rejects(first, /run 1 failed/);
  assert.deepEqual(await forced, { n: 2, force: true });
  assert.equal(b.busy, false);
});
