// The one coved starter (contract/client.ts), shared by the CLI and the extension: a missing entry
// is a clear error; a script runs under this runtime, an executable as itself, both detached, with
// COVE_HOME set and their output in coved.log; `connect` waits for the socket to answer.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { connect, startCoved } from '../../contract/client';
import { ErrorCodes, Requests } from '../../contract/protocol';
import { waitFor } from '../../contract/wait';

const COVED = path.resolve(__dirname, '..', '..', 'vmm-host', 'coved', 'main.js');

test('a missing entry says what to do', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-start-'));
  try {
    assert.throws(() => startCoved(home, path.join(home, 'nope.js')), (e: Error & { code?: number; hint?: string }) => e.code === ErrorCodes.missingTool && /reinstall/.test(e.hint ?? ''));
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test('a script and an executable both start, with COVE_HOME and coved.log', async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-start-'));
  try {
    const script = path.join(home, 'fake.js');
    // Written under a temp name, then renamed: the test must never read the file half-written.
    fs.writeFileSync(script, "const fs = require('fs'); fs.writeFileSync(process.env.COVE_HOME + '/from-script.tmp', process.execPath); fs.renameSync(process.env.COVE_HOME + '/from-script.tmp', process.env.COVE_HOME + '/from-script'); console.log('script ran');");
    const exe = path.join(home, 'fake-coved');
    fs.writeFileSync(exe, '#!/bin/sh\necho executable ran\ntouch "$COVE_HOME/from-exe"\n', { mode: 0o755 });
    const pids: Array<number | undefined> = [];
    startCoved(home, script, { onStart: (pid) => pids.push(pid) });
    startCoved(home, exe, { onStart: (pid) => pids.push(pid) });
    assert.equal(pids.filter((p) => typeof p === 'number').length, 2);
    await waitFor('both stand-ins to run', 10_000, () => fs.existsSync(path.join(home, 'from-script')) && fs.existsSync(path.join(home, 'from-exe')), 50);
    assert.equal(fs.readFileSync(path.join(home, 'from-script'), 'utf8'), process.execPath);
    await waitFor('their output in coved.log', 5000, () => /script ran/.test(fs.readFileSync(path.join(home, 'coved.log'), 'utf8')) && /executable ran/.test(fs.readFileSync(path.join(home, 'coved.log'), 'utf8')), 50);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test('connect starts the real coved and waits for it', async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-start-'));
  const conn = await connect({ home, covedEntry: COVED, env: { DOCKER_CONFIG: path.join(home, 'docker') } });
  try {
    const v = await conn.sendRequest(Requests.version);
    assert.equal(v.home, home);
    await conn.sendRequest(Requests.shutdown);
    await waitFor('coved to exit', 10_000, () => {
      try {
        process.kill(v.pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 100);
  } finally {
    conn.dispose();
    fs.rmSync(home, { recursive: true, force: true });
  }
});
