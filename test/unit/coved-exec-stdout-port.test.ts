// coved's exec relay with the stdin port as a command's stdout (vmm-host/coved/exec-relay.ts),
// without a VM: the real CLI client and relay, an HTTP/2 server standing in for the agent's end of
// the data channel, and a unix socket standing in for qemu's stdin.sock that plays what the guest
// writes. Checked: only a client that asks gets it; the nonce goes first on the port; the answer is
// the port's bytes up to the end marker (split across reads, followed by bytes that are dropped),
// also when the exit status arrives before them; a port that closes before its marker ends the
// command without an exit status; without the echo, stdout is the stream's body.
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { EXEC_EXIT_TRAILER, EXEC_STDIN_PORT_HEADER, EXEC_STDOUT_PORT_HEADER } from '../../contract/exec-stream';
import { execOverStreams } from '../../vmm-host/cli/exec-stream';
import { type Relays, servedStderr, StandIns } from './exec-relay-standins';

const { HTTP2_HEADER_STATUS } = http2.constants;

/** What the stand-in guest does on the port once the host's preamble is in. */
type GuestPlay = (sock: net.Socket, nonce: string) => void;

const collect = () => {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
};

describe('exec relay: the stdin port as stdout', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-stdout-relay-'));
  const stdinSock = path.join(dir, 'stdin.sock');
  const agentSock = path.join(dir, 'agent-h2.sock');
  let echo = true;
  /** How the agent ends the command: at once, or once the guest has played its part. */
  let exitFirst = false;
  let play: GuestPlay = () => undefined;
  const asked: Array<{ stdin: string | undefined; stdout: string | undefined }> = [];
  const preambles: string[] = [];
  let played: Array<() => void> = [];
  const standIns = new StandIns(dir);
  let relays: Relays;

  before(async () => {
    // qemu's stdin.sock: reads the 32-byte preamble, then lets the test's guest write.
    const qemu = net.createServer({ allowHalfOpen: true }, (sock) => {
      let got = Buffer.alloc(0);
      sock.on('error', () => undefined);
      const onData = (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.length < 32) return;
        sock.off('data', onData);
        sock.resume();
        const nonce = got.subarray(0, 32).toString('latin1');
        preambles.push(nonce);
        play(sock, nonce);
        const waiters = played;
        played = [];
        for (const w of waiters) w();
      };
      sock.on('data', onData);
    });
    const agent = http2.createServer();
    agent.on('stream', (stream, headers) => {
      if (servedStderr(stream, headers)) return;
      const stdout = headers[EXEC_STDOUT_PORT_HEADER] as string | undefined;
      asked.push({ stdin: headers[EXEC_STDIN_PORT_HEADER] as string | undefined, stdout });
      const take = echo && stdout !== undefined;
      stream.respond({ [HTTP2_HEADER_STATUS]: 200, ...(take ? { [EXEC_STDOUT_PORT_HEADER]: stdout } : {}) }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ [EXEC_EXIT_TRAILER]: '0' }));
      stream.resume();
      if (!take) stream.end('stdout on the stream');
      else if (exitFirst) stream.end();
      else played.push(() => setTimeout(() => stream.end(), 50));
    });
    relays = await standIns.listen(qemu, stdinSock, agent, agentSock);
  });

  after(() => standIns.close());

  const relay = (): Promise<string> => relays.start(stdinSock);

  async function run(execSock: string, stdoutPort: boolean): Promise<{ code: number | null; out: Buffer; err: string }> {
    const out = collect();
    const err = collect();
    const code = await execOverStreams(execSock, { command: 'cat big', env: {} }, { stdin: null, stdout: out.stream, stderr: err.stream }, { stdoutPort });
    return { code, out: out.bytes(), err: err.bytes().toString() };
  }

  test('a client that asks: the nonce first, then the port up to the marker (split across reads), what follows dropped', async () => {
    const execSock = await relay();
    const data = crypto.randomBytes(2 * 1024 * 1024 + 5);
    play = (sock, nonce) => {
      sock.write(data);
      sock.write(nonce.slice(0, 10));
      setTimeout(() => sock.write(`${nonce.slice(10)}leftover bytes after the marker`), 30);
    };
    asked.length = 0;
    preambles.length = 0;
    exitFirst = false;
    const r = await run(execSock, true);
    assert.equal(r.code, 0, r.err);
    assert.ok(r.out.equals(data), `the port's bytes, exactly (${r.out.length} of ${data.length})`);
    assert.equal(asked.length, 1);
    assert.match(asked[0].stdout ?? '', /^[0-9a-f]{32}$/);
    assert.equal(asked[0].stdin, undefined, 'never both');
    assert.deepEqual(preambles, [asked[0].stdout]);
    // The port is free again, and a client that does not ask gets it as stdin (the agent here
    // takes only the stdout request, so stdout is the stream).
    asked.length = 0;
    const plain = await run(execSock, false);
    assert.equal(plain.out.toString(), 'stdout on the stream');
    assert.equal(asked[0].stdout, undefined);
    assert.match(asked[0].stdin ?? '', /^[0-9a-f]{32}$/);
  });

  test('the exit status first, the bytes after: the answer waits for the marker', async () => {
    const execSock = await relay();
    const data = crypto.randomBytes(256 * 1024);
    play = (sock, nonce) => setTimeout(() => sock.write(Buffer.concat([data, Buffer.from(nonce, 'latin1')])), 300);
    exitFirst = true;
    const r = await run(execSock, true);
    exitFirst = false;
    assert.equal(r.code, 0, r.err);
    assert.ok(r.out.equals(data));
  });

  test('a port that closes before its marker: no exit status, and the client says so', async () => {
    const execSock = await relay();
    play = (sock) => {
      sock.write('half of it');
      setTimeout(() => sock.destroy(), 50);
    };
    const r = await run(execSock, true);
    assert.equal(r.code, 255);
    assert.match(r.err, /closed before the command reported its exit status/);
  });

  test('without the echo (an older agent): stdout is the stream body and nothing connects to the port', async () => {
    const execSock = await relay();
    echo = false;
    preambles.length = 0;
    try {
      const r = await run(execSock, true);
      assert.equal(r.code, 0);
      assert.equal(r.out.toString(), 'stdout on the stream');
      await new Promise((res) => setTimeout(res, 100));
      assert.deepEqual(preambles, []);
    } finally {
      echo = true;
    }
  });
});
