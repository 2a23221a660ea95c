// Exec streams end to end without a VM: `cove exec`'s client (vmm-host/cli/exec-stream.ts) → coved's
// exec.sock relay → coved's DataLink → a FIFO pair standing in for the data port → the real agent
// bundle, which runs the command with /bin/sh. Checked: stdout, stderr and the exit status kept
// apart, stdin to its EOF, large transfers both ways at once, signals, a command that stops reading,
// a missing working directory, what the agent refuses, and the fallbacks to SSH (nothing runs then).
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import * as path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { encodeExecRequest, exitCodeOf, EXEC_ID_HEADER, EXEC_REQUEST_HEADER, type ExecRequest } from '../../contract/exec-stream';
import { DataLink, isDataLinkDown } from '../../vmm-host/coved/data-link';
import { startExecRelay } from '../../vmm-host/coved/exec-relay';
import { execOverStreams } from '../../vmm-host/cli/exec-stream';
import { serveDataPort, startAgent, within, type RunningAgent } from './agent-harness';

class Sink extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk);
    cb();
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
  get text(): string {
    return this.bytes.toString('utf8');
  }
}

describe('exec streams: cove exec → exec.sock → data channel → agent', () => {
  let agent: RunningAgent;
  let qemu: net.Server;
  let link: DataLink;
  let relay: net.Server;
  let execSock: string;
  const logs: string[] = [];

  before(async () => {
    agent = await startAgent({ data: true, env: { COVE_AGENT_POLL_MS: '3600000' } });
    ({ server: qemu } = await serveDataPort(agent, path.join(agent.dir, 'data.sock')));
    link = new DataLink({ dataSock: path.join(agent.dir, 'data.sock'), log: (m) => logs.push(m), helloTimeoutMs: 5000, firstHelloTimeoutMs: 5000 });
    const up = new Promise<void>((r) => link.once('up', r));
    link.start();
    await within(up, 15_000, `the data link to come up; coved said:\n${logs.join('\n')}\nagent:\n${agent.log()}`);
    execSock = path.join(agent.dir, 'exec.sock');
    relay = await startExecRelay({
      path: execSock,
      log: (m) => logs.push(m),
      open: (authority, headers) => link.request(authority, headers),
      useSsh: (e) => isDataLinkDown(e),
    });
  });

  after(async () => {
    relay?.close();
    link?.close();
    qemu?.close();
    await agent?.stop();
  });

  async function run(req: Partial<ExecRequest> & { command: string }, stdin: Readable | null = null): Promise<{ code: number | null; out: Sink; err: Sink }> {
    const out = new Sink();
    const err = new Sink();
    const code = await within(execOverStreams(execSock, { env: {}, ...req }, { stdin, stdout: out, stderr: err }), 60_000, `exec of ${req.command}; agent:\n${agent.log()}`);
    return { code, out, err };
  }

  test('stdout, stderr and the exit status arrive apart; the working directory and environment are the ones asked for', async () => {
    const { code, out, err } = await run({ command: 'echo out; echo err >&2; pwd; echo "$FOO"; exit 7', cwd: agent.dir, env: { FOO: 'bar baz' } });
    assert.equal(code, 7);
    assert.equal(out.text, `out\n${agent.dir}\nbar baz\n`);
    assert.equal(err.text, 'err\n');
  });

  test('stdin reaches the command up to its EOF; 8 MiB each way at once, byte for byte', async () => {
    const data = crypto.randomBytes(8 * 1024 * 1024);
    const { code, out, err } = await run({ command: 'cat; echo END >&2' }, Readable.from([data.subarray(0, 3e6), data.subarray(3e6)]));
    assert.equal(code, 0, err.text);
    assert.equal(out.bytes.length, data.length);
    assert.ok(out.bytes.equals(data), 'the bytes came back unchanged');
    assert.equal(err.text, 'END\n');
  });

  test('a signal that ends the command is reported as 128 + its number; a missing command as 127', async () => {
    assert.equal((await run({ command: 'kill -TERM $$' })).code, 143);
    const missing = await run({ command: 'no-such-command-here' });
    assert.equal(missing.code, 127);
    assert.match(missing.err.text, /not found/);
  });

  test('a command that exits without reading stdin ends the exec though the host is still sending', async () => {
    const stdin = new PassThrough();
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    const feeder = setInterval(() => stdin.write(chunk), 20);
    try {
      const { code, out } = await run({ command: 'head -c 10' }, stdin);
      assert.equal(code, 0);
      assert.equal(out.text, 'a'.repeat(10));
    } finally {
      clearInterval(feeder);
      stdin.destroy();
    }
  });

  test('a working directory that does not exist: the command runs in / and stderr says why', async () => {
    const { code, out, err } = await run({ command: 'pwd', cwd: path.join(agent.dir, 'gone') });
    assert.equal(code, 0);
    assert.equal(out.text, '/\n');
    assert.match(err.text, /working directory .*gone does not exist; using \//);
  });

  test('the agent refuses a malformed request or stderr id with 400 (coved falls back to SSH), and runs nothing', async () => {
    const marker = path.join(agent.dir, 'must-not-exist');
    const bad: Array<[http2.OutgoingHttpHeaders, RegExp]> = [
      [{}, /cove-exec header is missing/],
      [{ [EXEC_REQUEST_HEADER]: 'not base64!' }, /not base64/],
      [{ [EXEC_REQUEST_HEADER]: encodeExecRequest({ command: `touch ${marker}`, env: { 'A=B': 'x' } }) }, /env has a bad entry/],
      [{ [EXEC_REQUEST_HEADER]: encodeExecRequest({ command: `touch ${marker}`, env: {}, cwd: 'relative' }) }, /cwd is not an absolute path/],
      [{ [EXEC_REQUEST_HEADER]: encodeExecRequest({ command: `touch ${marker}`, env: {} }), [EXEC_ID_HEADER]: 'XYZ' }, /32 lowercase hex/],
    ];
    for (const [headers, why] of bad) {
      await assert.rejects(link.request('exec', headers), (e: unknown) => isDataLinkDown(e) && why.test(e.message), JSON.stringify(headers));
    }
    assert.equal(fs.existsSync(marker), false);
  });

  test('no exec.sock (an older coved), or an agent that refuses exec streams (an older image): null, so SSH runs the command, and nothing ran here', async () => {
    const marker = path.join(agent.dir, 'ran-twice');
    assert.equal(await execOverStreams(path.join(agent.dir, 'no-such.sock'), { command: `touch ${marker}`, env: {} }, { stdin: null, stdout: new Sink(), stderr: new Sink() }), null);
    const downSock = path.join(agent.dir, 'exec-down.sock');
    const down = await startExecRelay({
      path: downSock,
      log: () => undefined,
      open: () => link.request('exec-but-the-link-is-down-anyway', {}).then(() => {
        throw new Error('unreachable');
      }),
      useSsh: (e) => isDataLinkDown(e),
    });
    try {
      assert.equal(await execOverStreams(downSock, { command: `touch ${marker}`, env: {} }, { stdin: null, stdout: new Sink(), stderr: new Sink() }), null);
    } finally {
      down.close();
    }
    assert.equal(fs.existsSync(marker), false);
  });

  test('exit trailers from a guest are believed only when sane', () => {
    assert.equal(exitCodeOf({ 'cove-exit': '0' }), 0);
    assert.equal(exitCodeOf({ 'cove-exit': '255' }), 255);
    assert.equal(exitCodeOf({ 'cove-exit': '256' }), null);
    assert.equal(exitCodeOf({ 'cove-exit': '-1' }), null);
    assert.equal(exitCodeOf({ 'cove-exit-signal': 'KILL' }), 137);
    assert.equal(exitCodeOf({ 'cove-exit-signal': 'WEIRD' }), 129);
    assert.equal(exitCodeOf({}), null);
    assert.equal(exitCodeOf(null), null);
  });
});
