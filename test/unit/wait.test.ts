// The one polling wait (contract/wait.ts): what it returns, when it gives up, and what it says then.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isWaitTimeoutError, waitFor } from '../../contract/wait';

test('resolves with the first truthy value', async () => {
  let n = 0;
  assert.equal(await waitFor('the third probe', 5000, () => (++n === 3 ? 'three' : null), 5), 'three');
  assert.equal(n, 3);
});

test('a probe that throws is retried by default, and its last error is named on timeout', async () => {
  let n = 0;
  const v = await waitFor('a flaky probe', 5000, () => {
    if (++n < 3) throw new Error('not yet');
    return n;
  }, 5);
  assert.equal(v, 3);
  await assert.rejects(
    waitFor('a socket that never answers', 50, () => Promise.reject(new Error('ECONNREFUSED')), { intervalMs: 10, hint: 'start it' }),
    (e: unknown) => {
      assert.ok(isWaitTimeoutError(e));
      assert.equal(e.message, 'timed out after 0 s waiting for a socket that never answers (last error: ECONNREFUSED)');
      assert.equal(e.awaited, 'a socket that never answers');
      assert.equal(e.hint, 'start it');
      return true;
    },
  );
});

test("onError 'throw' ends the wait at the first error", async () => {
  let n = 0;
  await assert.rejects(
    waitFor('qemu to be ready', 5000, () => {
      n++;
      throw new Error('qemu exited');
    }, { intervalMs: 5, onError: 'throw' }),
    /^Error: qemu exited$/,
  );
  assert.equal(n, 1);
});

test('a falsy value until the deadline is a timeout naming what was awaited', async () => {
  const t0 = Date.now();
  await assert.rejects(waitFor('nothing', 100, () => false, 20), /timed out after 0 s waiting for nothing$/);
  assert.ok(Date.now() - t0 >= 100);
});
