// A paused or sleeping sandbox is "up" for the window (extension/src/states.ts): its terminals, its
// ports and the window's Docker settings stay pointed at it, since a connection wakes it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SandboxInfo, SandboxState } from '../../contract/protocol';
import { isUp } from '../../extension/src/states';

test('running, paused and asleep are up; the rest are not', () => {
  const states: SandboxState[] = ['creating', 'starting', 'running', 'paused', 'asleep', 'stopping', 'stopped', 'crashed'];
  const up = states.filter((state) => isUp({ state } as SandboxInfo));
  assert.deepEqual(up, ['running', 'paused', 'asleep']);
  assert.equal(isUp(undefined), false);
});
