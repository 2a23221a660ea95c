// The extension's activation reports its own failure (defect #7): an error thrown while building
// the context object reaches the user, and activation still fails. extension/src/activation.ts does
// not import `vscode`, so this runs it as the extension does.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { activateReporting } from '../../extension/src/activation';

test('an error while building the context is shown, then rethrown', async () => {
  const shown: string[] = [];
  const newCtx = (): never => {
    throw new Error('cannot create the output channel');
  };
  await assert.rejects(
    activateReporting(newCtx, (m) => shown.push(m)),
    /cannot create the output channel/,
  );
  assert.deepEqual(shown, ['Cove failed to activate: cannot create the output channel']);
});

test('an asynchronous failure is reported too; success shows nothing', async () => {
  const shown: string[] = [];
  await assert.rejects(activateReporting(async () => Promise.reject(new Error('late')), (m) => shown.push(m)), /late/);
  assert.equal(await activateReporting(() => 42, (m) => shown.push(m)), 42);
  assert.deepEqual(shown, ['Cove failed to activate: late']);
});
