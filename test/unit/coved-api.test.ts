// coved's API against a real coved process (no VM): hostile names and folders get clear errors and
// create nothing; malformed frames get JSON-RPC errors or a closed connection; coved stays up.
import { strict as assert } from 'node:assert';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { connect } from '../../contract/client';
import { ErrorCodes, Requests } from '../../contract/protocol';
import { checkName, nameForFolder } from '../../contract/names';
import { frameProblem } from '../../contract/transport';
import { parseSizeMiB } from '../../vmm-host/cli/output';
import type { MessageConnection } from 'vscode-jsonrpc/node';

const COVED = path.resolve(__dirname, '..', '..', 'vmm-host', 'coved', 'main.js');
let home = '';
let coved: child_process.ChildProcess | null = null;
let conn: MessageConnection;

function rawSocket(): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${path.join(home, 'coved.sock')}:/`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Sends one frame and resolves with the reply, or 'closed' if coved closed the connection. */
function exchange(ws: WebSocket, frame: string | Buffer, binary = false): Promise<unknown> {
  return new Promise((resolve) => {
    const done = (v: unknown) => {
      clearTimeout(timer);
      ws.off('message', onMessage);
      ws.off('close', onClose);
      resolve(v);
    };
    const onMessage = (d: WebSocket.RawData) => done(JSON.parse((d as Buffer).toString('utf8')));
    const onClose = () => done('closed');
    const timer = setTimeout(() => done('no answer'), 5000);
    ws.on('message', onMessage);
    ws.on('close', onClose);
    ws.send(frame, { binary });
  });
}

async function expectError(p: Promise<unknown>, code: number, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: { code?: number; message?: string; data?: { hint?: string } }) => {
    assert.equal(e.code, code, `error code for ${e.message}`);
    assert.match(e.message ?? '', pattern);
    return true;
  });
}

describe('names and sizes', () => {
  test('valid names pass, hostile ones are refused with the rule', () => {
    for (const ok of ['t1', 'a', 'my-project', '0abc', 'x'.repeat(40)]) assert.equal(checkName(ok), ok);
    for (const bad of ['', 'x'.repeat(41), 'x'.repeat(300), '../x', 'a/b', 'Ünïcødé', 'a;rm -rf /', '$(id)', '-lead', 'UPPER', 'a b', '.', '..', 'a\nb']) {
      assert.throws(() => checkName(bad), (e: Error & { hint?: string }) => /lowercase letters/.test(e.hint ?? ''), `refuses ${JSON.stringify(bad)}`);
    }
    assert.throws(() => checkName(42), /must be a string/);
  });

  test('a folder gives a usable name', () => {
    assert.equal(nameForFolder('/home/me/My Project!'), 'my-project');
    assert.equal(nameForFolder('/srv/Ünï'), 'n');
    assert.equal(nameForFolder('/srv/!!!'), 'sandbox');
    assert.equal(nameForFolder('/x/' + 'a'.repeat(80)).length, 40);
    for (const dir of ['/a/b c', '/q/..weird..', '/z/' + '-'.repeat(10)]) checkName(nameForFolder(dir));
  });

  test('sizes read as a person writes them', () => {
    assert.equal(parseSizeMiB('2G', 'M'), 2048);
    assert.equal(parseSizeMiB('512M', 'M'), 512);
    assert.equal(parseSizeMiB('1.5GiB', 'M'), 1536);
    assert.equal(parseSizeMiB('20', 'G'), 20480);
    for (const bad of ['', 'lots', '-1G', '0', '1X']) assert.throws(() => parseSizeMiB(bad, 'M'), /size/);
  });

  test('frames that are not JSON-RPC 2.0 are named', () => {
    assert.equal(frameProblem({ jsonrpc: '2.0', id: 1, method: 'x' }), null);
    assert.match(frameProblem([]) ?? '', /batch/);
    assert.match(frameProblem('str') ?? '', /object/);
    assert.match(frameProblem({ jsonrpc: '1.0', method: 'x' }) ?? '', /2\.0/);
    assert.match(frameProblem({ jsonrpc: '2.0', id: {}, method: 'x' }) ?? '', /id/);
    assert.match(frameProblem({ jsonrpc: '2.0', id: 1, method: 5 }) ?? '', /method/);
    assert.match(frameProblem({ jsonrpc: '2.0', id: 1, method: 'x', params: 3 }) ?? '', /params/);
    assert.match(frameProblem({ jsonrpc: '2.0' }) ?? '', /method/);
  });
});

describe('coved API (a real coved, no VM)', () => {
  before(async () => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-api-'));
    coved = child_process.spawn(process.execPath, [COVED], { env: { ...process.env, COVE_HOME: home, DOCKER_CONFIG: path.join(home, 'docker') }, stdio: ['ignore', 'ignore', 'pipe'] });
    conn = await connect({ home, autoStart: false }).catch(async () => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        await new Promise((r) => setTimeout(r, 200));
        try {
          return await connect({ home, autoStart: false });
        } catch (e) {
          if (Date.now() > deadline) throw new Error(`coved did not start within 15 s: ${(e as Error).message}`, { cause: e });
        }
      }
    });
  });

  after(() => {
    conn?.dispose();
    coved?.kill('SIGTERM');
    fs.rmSync(home, { recursive: true, force: true });
  });

  test('version answers, and the socket is 0600 in a 0700 folder', async () => {
    const v = await conn.sendRequest(Requests.version);
    assert.equal(v.home, home);
    assert.equal(fs.statSync(path.join(home, 'coved.sock')).mode & 0o777, 0o600);
    assert.equal(fs.statSync(home).mode & 0o777, 0o700);
  });

  test('hostile names are refused and nothing is created', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-ws-'));
    try {
      for (const name of ['', 'x'.repeat(300), '../x', 'a/b', 'ünï', 'a;touch /tmp/pwned', '`id`', 5, null as unknown as string]) {
        if (name === null) continue;
        await expectError(conn.sendRequest(Requests.up, { dir, name: name as string }), ErrorCodes.invalidInput, /name/);
      }
      assert.deepEqual(fs.readdirSync(path.join(home, 'vms')), []);
      assert.ok(!fs.existsSync('/tmp/pwned'));
      assert.ok(!fs.existsSync(path.join(home, 'x')));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('folders that cannot be shared are refused with the reason', async () => {
    const file = path.join(home, '..', `cove-file-${process.pid}`);
    fs.writeFileSync(file, 'x');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-ws-'));
    try {
      await expectError(conn.sendRequest(Requests.up, { dir: '/nonexistent/cove/dir', name: 'n1' }), ErrorCodes.invalidInput, /does not exist/);
      await expectError(conn.sendRequest(Requests.up, { dir: file, name: 'n1' }), ErrorCodes.invalidInput, /is not a folder/);
      await expectError(conn.sendRequest(Requests.up, { dir: '/', name: 'n1' }), ErrorCodes.invalidInput, /whole host/);
      await expectError(conn.sendRequest(Requests.up, { dir: 'relative/path', name: 'n1' }), ErrorCodes.invalidInput, /not absolute/);
      await expectError(conn.sendRequest(Requests.up, { dir: home, name: 'n1' }), ErrorCodes.invalidInput, /Cove's own state/);
      await expectError(conn.sendRequest(Requests.up, { dir: 42 as unknown as string }), ErrorCodes.invalidInput, /"dir"/);
      await expectError(conn.sendRequest(Requests.up, { dir, name: 'n1', cpus: 1000 }), ErrorCodes.invalidInput, /cpus/);
      await expectError(conn.sendRequest(Requests.up, { dir, name: 'n1', memoryMiB: 'lots' as unknown as number }), ErrorCodes.invalidInput, /memoryMiB/);
      await expectError(conn.sendRequest(Requests.up, { dir, name: 'n1', mount: 'nfs' as '9p' }), ErrorCodes.invalidInput, /mount/);
      await expectError(conn.sendRequest(Requests.up, { dir: '/tmp/a:b', name: 'n1' }), ErrorCodes.invalidInput, /':'/);
      assert.deepEqual(fs.readdirSync(path.join(home, 'vms')), []);
    } finally {
      fs.rmSync(file, { force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('operations on a sandbox that does not exist say how to find one', async () => {
    await expectError(conn.sendRequest(Requests.inspect, { name: 'ghost' }), ErrorCodes.notFound, /no sandbox named ghost/);
    await expectError(conn.sendRequest(Requests.stop, { name: 'ghost' }), ErrorCodes.notFound, /ghost/);
    await expectError(conn.sendRequest(Requests.remove, { name: '../../etc' }), ErrorCodes.invalidInput, /name/);
    await expectError(conn.sendRequest(Requests.publish, { name: 'ghost', hostPort: 70000, guestPort: 1 }), ErrorCodes.notFound, /ghost/);
  });

  test('1,000 malformed frames each get an error or a closed connection, and coved keeps serving', async () => {
    const frames: Array<string | Buffer> = [];
    const junk = ['{', 'null', '[]', '"x"', '42', '{"jsonrpc":"1.0","id":1,"method":"cove/version"}', '{"jsonrpc":"2.0","id":{},"method":"x"}', '{"jsonrpc":"2.0","id":1,"method":7}', '{"jsonrpc":"2.0","id":1,"method":"sandbox/up","params":3}', '{"jsonrpc":"2.0","id":1}'];
    for (let i = 0; i < 1000; i++) {
      const k = i % 14;
      if (k < junk.length) frames.push(junk[k]);
      else if (k === 10) frames.push(JSON.stringify({ jsonrpc: '2.0', id: i, method: `no/such/method/${i}` }));
      else if (k === 11) frames.push(JSON.stringify({ jsonrpc: '2.0', id: i, method: 'sandbox/up', params: { dir: i, name: [i] } }));
      else if (k === 12) frames.push(JSON.stringify({ jsonrpc: '2.0', id: i, method: 'sandbox/inspect', params: { name: '\u0000'.repeat(i % 50) } }));
      else frames.push(Buffer.from([0xff, 0x00, i & 0xff]));
    }
    let answered = 0;
    let closed = 0;
    let ws = await rawSocket();
    for (let i = 0; i < frames.length; i++) {
      const reply = await exchange(ws, frames[i], Buffer.isBuffer(frames[i]));
      if (reply === 'closed') {
        closed++;
        ws = await rawSocket();
        continue;
      }
      assert.notEqual(reply, 'no answer', `frame ${i} (${String(frames[i]).slice(0, 60)}) got no answer`);
      const r = reply as { jsonrpc?: string; error?: { code: number; message: string } };
      assert.equal(r.jsonrpc, '2.0');
      assert.ok(r.error && typeof r.error.code === 'number' && r.error.message, `frame ${i} got an error reply`);
      answered++;
    }
    ws.close();
    assert.equal(answered + closed, 1000);
    // An oversized frame closes that connection (WebSocket 1009) ...
    const big = await rawSocket();
    const reply = await exchange(big, JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'cove/version', params: { pad: 'x'.repeat(2 * 1024 * 1024) } }));
    assert.equal(reply, 'closed');
    // ... and coved still serves the next client.
    const v = await conn.sendRequest(Requests.version);
    assert.equal(v.home, home);
    assert.equal(coved?.exitCode, null, 'coved is still running');
  });
});
