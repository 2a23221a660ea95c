// What reaches a client when a coved handler fails (defect #6): the JSON-RPC code and the hint
// survive the trip, and an uncaught exception ends coved (non-zero) instead of leaving it half alive.
import { strict as assert } from 'node:assert';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { asCoveError, connect } from '../../contract/client';
import { CoveError, isCoveError } from '../../contract/errors';
import { ErrorCodes, Requests } from '../../contract/protocol';
import { waitFor } from '../../contract/wait';
import { DriverError } from '../../vmm-host/driver/errors';
import { toResponseError } from '../../vmm-host/coved/server';

const COVED = path.resolve(__dirname, '..', '..', 'vmm-host', 'coved', 'main.js');
const SERVER = path.resolve(__dirname, '..', '..', 'vmm-host', 'coved', 'server.js');

describe('errors keep their code and hint', () => {
  test('a DriverError becomes a boot error with its hint', () => {
    const e = toResponseError(new DriverError('qemu exited (1) before listening', 'see qemu.log'));
    assert.equal(e.code, ErrorCodes.boot);
    assert.equal(e.data?.hint, 'see qemu.log');
    const back = asCoveError(e);
    assert.ok(isCoveError(back));
    assert.equal(back.hint, 'see qemu.log');
  });

  test('a CoveError keeps its code, hint and console tail', () => {
    const e = toResponseError(new CoveError(ErrorCodes.conflict, 'sandbox x is running', 'stop it first', 'tail'));
    assert.deepEqual([e.code, e.data?.hint, e.data?.consoleTail], [ErrorCodes.conflict, 'stop it first', 'tail']);
  });

  test('anything else is internal and points at the log', () => {
    const e = toResponseError(new Error('boom'));
    assert.equal(e.code, ErrorCodes.internal);
    assert.match(e.data?.hint ?? '', /coved\.log/);
  });
});

describe('over the wire (a real coved, no VM)', () => {
  let home = '';
  let coved: child_process.ChildProcess | null = null;
  let conn: MessageConnection | undefined;

  before(async () => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-err-'));
    coved = child_process.spawn(process.execPath, [COVED], { env: { ...process.env, COVE_HOME: home, DOCKER_CONFIG: path.join(home, 'docker') }, stdio: ['ignore', 'ignore', 'pipe'] });
    conn = await waitFor('coved to answer on its socket', 15_000, () => connect({ home, autoStart: false }), 100);
  });

  after(() => {
    conn?.dispose();
    coved?.kill('SIGTERM');
    fs.rmSync(home, { recursive: true, force: true });
  });

  test('invalid params stay invalid params (-32602), not an internal error', async () => {
    await assert.rejects(conn!.sendRequest(Requests.imageBuild, { force: 'yes' as unknown as boolean }), (e: { code?: number; message?: string }) => {
      assert.equal(e.code, -32602, `got ${e.code}: ${e.message}`);
      assert.match(e.message ?? '', /"force"/);
      return true;
    });
    const badToken = { force: false, progressToken: 5 } as unknown as { force: boolean };
    await assert.rejects(conn!.sendRequest(Requests.imageBuild, badToken), (e: { code?: number; message?: string }) => e.code === -32602 && /"progressToken"/.test(e.message ?? ''));
  });
});

describe('an uncaught exception', () => {
  test('is logged, cleans up and exits non-zero', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-uncaught-'));
    const marker = path.join(dir, 'cleaned');
    const script = `
      const { exitOnUncaught } = require(${JSON.stringify(SERVER)});
      exitOnUncaught((m) => process.stderr.write(m + '\\n'), () => require('fs').writeFileSync(${JSON.stringify(marker)}, 'x'));
      setInterval(() => {}, 1000);
      setTimeout(() => { throw new Error('a handler bug'); }, 50);`;
    try {
      const r = child_process.spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
      assert.notEqual(r.signal, 'SIGTERM', 'the process kept running after the exception');
      assert.equal(r.status, 70);
      assert.match(r.stderr, /uncaught exception, exiting: Error: a handler bug/);
      assert.ok(fs.existsSync(marker), 'the clean-up ran');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
