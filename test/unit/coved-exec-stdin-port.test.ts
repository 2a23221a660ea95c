// coved's exec relay and the stdin port (vmm-host/coved/exec-relay.ts), without a VM: the real CLI
// client and relay, an HTTP/2 server standing in for the agent's end of the data channel, and a unix
// socket standing in for qemu's stdin.sock. Checked: the nonce goes first on the port and stdin after
// it, closed by a half-close (qemu must read to the end); the request body stays empty; no echo means
// stdin goes on the stream and nothing connects to the port; one command at a time asks for it.
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { EXEC_EXIT_TRAILER, EXEC_STDIN_PORT_HEADER } from '../../contract/exec-stream';
import { execOverStreams } from '../../vmm-host/cli/exec-stream';
import { type Relays, servedStderr, StandIns } from './exec-relay-standins';

const { HTTP2_HEADER_STATUS } = http2.constants;

interface PortConnection {
  bytes: Buffer;
  halfClosed: boolean;
}

const sink = () => new Writable({ write: (_c, _e, cb) => cb() });

describe('exec relay: the stdin port', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-stdin-relay-'));
  const stdinSock = path.join(dir, 'stdin.sock');
  const agentSock = path.join(dir, 'agent-h2.sock');
  let echo = true;
  /** Every request the fake agent saw for `exec`: whether it asked for the port, and its body. */
  const asked: Array<{ nonce: string | undefined; body: number }> = [];
  const port: PortConnection[] = [];
  let portWaiters: Array<(c: PortConnection) => void> = [];
  const standIns = new StandIns(dir);
  let relays: Relays;

  before(async () => {
    // qemu's stdin.sock: collects what arrives and closes once it has read the end, as qemu does.
    const qemu = net.createServer({ allowHalfOpen: true }, (sock) => {
      const chunks: Buffer[] = [];
      sock.on('data', (d: Buffer) => chunks.push(d));
      sock.on('end', () => {
        const c = { bytes: Buffer.concat(chunks), halfClosed: true };
        port.push(c);
        sock.end();
        const waiters = portWaiters;
        portWaiters = [];
        for (const w of waiters) w(c);
      });
      sock.on('error', () => undefined);
    });
      // The agent: `exec` answers with (or without) the echo, then, once its body and the port's
    // bytes are in, sends how many bytes the port carried and exit 0.
    const agent = http2.createServer();
    agent.on('stream', (stream, headers) => {
      if (servedStderr(stream, headers)) return;
      const nonce = headers[EXEC_STDIN_PORT_HEADER] as string | undefined;
      const take = echo && nonce !== undefined;
      stream.respond({ [HTTP2_HEADER_STATUS]: 200, ...(take ? { [EXEC_STDIN_PORT_HEADER]: nonce } : {}) }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ [EXEC_EXIT_TRAILER]: '0' }));
      let body = 0;
      stream.on('data', (d: Buffer) => (body += d.length));
      stream.on('end', () => {
        asked.push({ nonce, body });
        if (take) portWaiters.push((c: PortConnection) => stream.end(`port ${c.bytes.length}`));
        else stream.end(`body ${body}`);
      });
    });
    relays = await standIns.listen(qemu, stdinSock, agent, agentSock);
  });

  after(() => standIns.close());

  const relay = (withPort: boolean): Promise<string> => relays.start(withPort ? stdinSock : undefined);

  async function run(execSock: string, stdin: Buffer): Promise<{ code: number | null; out: string }> {
    let out = '';
    const stdout = new Writable({
      write(c: Buffer, _e, cb) {
        out += c.toString();
        cb();
      },
    });
    const code = await execOverStreams(execSock, { command: 'cat', env: {} }, { stdin: Readable.from([stdin]), stdout, stderr: sink() });
    return { code, out };
  }

  test('with the echo: the nonce first on the port, then stdin to its end, half-closed; the request body stays empty', async () => {
    const execSock = await relay(true);
    const data = crypto.randomBytes(3 * 1024 * 1024 + 7);
    asked.length = 0;
    port.length = 0;
    const { code, out } = await run(execSock, data);
    assert.equal(code, 0);
    assert.equal(out, `port ${32 + data.length}`);
    assert.equal(asked.length, 1);
    assert.match(asked[0].nonce ?? '', /^[0-9a-f]{32}$/);
    assert.equal(asked[0].body, 0, 'nothing went on the stream');
    assert.equal(port[0].bytes.subarray(0, 32).toString('latin1'), asked[0].nonce);
    assert.ok(port[0].bytes.subarray(32).equals(data), 'stdin byte for byte after the nonce');
    assert.ok(port[0].halfClosed);
    // The port is free again for the next command.
    asked.length = 0;
    assert.equal((await run(execSock, Buffer.from('again'))).out, `port ${32 + 5}`);
    assert.ok(asked[0].nonce);
  });

  test('without the echo (an older agent, or the port busy in the guest): stdin goes on the stream and nothing connects to the port', async () => {
    const execSock = await relay(true);
    echo = false;
    try {
      asked.length = 0;
      port.length = 0;
      const { code, out } = await run(execSock, Buffer.alloc(100_000, 1));
      assert.equal(code, 0);
      assert.equal(out, 'body 100000');
      assert.ok(asked[0].nonce, 'the relay asked');
      assert.equal(port.length, 0);
      // And the relay did not keep the port for it: the next command asks again.
      asked.length = 0;
      await run(execSock, Buffer.from('x'));
      assert.ok(asked[0].nonce);
    } finally {
      echo = true;
    }
  });

  test('two commands at once: one asks for the port, the other sends stdin on the stream; a relay without stdinSock never asks', async () => {
    const execSock = await relay(true);
    asked.length = 0;
    const [a, b] = await Promise.all([run(execSock, Buffer.alloc(2_000_000, 2)), run(execSock, Buffer.alloc(1_000_000, 3))]);
    assert.deepEqual([a.code, b.code], [0, 0]);
    assert.equal(asked.filter((q) => q.nonce !== undefined).length, 1, JSON.stringify(asked));
    const outs = [a.out, b.out].sort().join(', ');
    assert.ok([`body 1000000, port ${32 + 2_000_000}`, `body 2000000, port ${32 + 1_000_000}`].includes(outs), outs);
    const plain = await relay(false);
    asked.length = 0;
    assert.equal((await run(plain, Buffer.from('abc'))).out, 'body 3');
    assert.equal(asked[0].nonce, undefined);
  });
});
