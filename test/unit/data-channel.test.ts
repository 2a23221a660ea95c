// The data channel end to end without a VM: the real agent bundle serving its data port on a FIFO
// pair, a unix socket standing in for qemu's chardev socket (one host at a time, its bytes bridged
// to the FIFOs; a host that leaves closes the writer, so the agent reads EOF), coved's DataLink and
// StreamPool, a fake dockerd on the agent's docker socket and TCP servers on 127.0.0.1. Checked:
// CONNECT to dockerd and to TCP ports, half-close both ways, large transfers byte for byte, what the
// guest refuses, reconnects over stale bytes, and the pool.
import * as assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { dataAuthority, parseDataTarget } from '../../contract/data-channel';
import { DataLink, DataTargetError, awaitHello, isDataLinkDown } from '../../vmm-host/coved/data-link';
import { StreamPool } from '../../vmm-host/coved/stream-pool';
import { HelloWatch } from '../../agent/transport/data-port';
import { stopStaleReaders } from '../../agent/transport/port-bridge';
import { serveDataPort, startAgent, waitFor, within, type RunningAgent } from './agent-harness';

/** Collects a stream's bytes until its end. */
function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

describe('data channel: framing and targets', () => {
  test('targets: docker.sock and IP literals with a port, nothing else', () => {
    assert.deepEqual(parseDataTarget('docker.sock'), { kind: 'docker' });
    assert.deepEqual(parseDataTarget('agent.sock'), { kind: 'agent' });
    assert.deepEqual(parseDataTarget('127.0.0.1:8080'), { kind: 'tcp', host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseDataTarget('[::1]:443'), { kind: 'tcp', host: '::1', port: 443 });
    for (const bad of ['', '/var/run/docker.sock', 'localhost:80', 'example.com:80', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:65536', '300.0.0.1:80', '[zz]:80', '::1:80', 'docker.sock:1']) {
      assert.equal(parseDataTarget(bad), null, bad);
    }
    assert.equal(dataAuthority({ kind: 'tcp', host: '::1', port: 5 }), '[::1]:5');
  });

  test('the agent finds a hello across reads and after junk', () => {
    const w = new HelloWatch();
    const line = `COVE-DATA/1 ${'ab'.repeat(16)}\n`;
    assert.equal(w.find(Buffer.from('junk junk COVE-DATA/1 ab')), null);
    const found = w.find(Buffer.from(`${line.slice(14)}PRI *`));
    assert.deepEqual(found && { nonce: found.nonce, rest: found.rest.toString() }, { nonce: 'ab'.repeat(16), rest: 'PRI *' });
    assert.equal(w.find(Buffer.from('COVE-DATA/1 short\n')), null);
  });

  test('a reader an earlier agent left holding the port is found and stopped; other processes are not', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-stale-'));
    const port = path.join(dir, 'vport9p9');
    const other = path.join(dir, 'other');
    fs.writeFileSync(other, '');
    execFileSync('mkfifo', [port]);
    // `cat` on the port as an agent's reader is (stdin = the port), and one holding another file.
    const fd = fs.openSync(port, fs.constants.O_RDWR);
    const stale = spawn('cat', [], { stdio: [fd, 'ignore', 'ignore'] });
    const otherFd = fs.openSync(other, 'r');
    const bystander = spawn('sleep', ['60'], { stdio: [otherFd, 'ignore', 'ignore'] });
    try {
      const gone = new Promise<NodeJS.Signals | null>((resolve) => stale.once('exit', (_c, sig) => resolve(sig)));
      await waitFor(() => stale.pid !== undefined && fs.existsSync(`/proc/${stale.pid}/fd/0`), 10_000, 'the stale reader to start');
      // This process holds the port too (fd): it is never its own victim.
      const stopped = stopStaleReaders(port);
      assert.deepEqual(stopped, [`${stale.pid} (cat)`]);
      assert.equal(await within(gone, 10_000, 'the stale reader to exit'), 'SIGKILL');
      assert.equal(bystander.exitCode, null, 'a process holding another file is left alone');
      assert.deepEqual(stopStaleReaders(port), [], 'nothing left to stop');
    } finally {
      stale.kill('SIGKILL');
      bystander.kill('SIGKILL');
      fs.closeSync(fd);
      fs.closeSync(otherFd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// A session runs on a socket that `sh` and two `cat`s bridge to the port (port-bridge.ts); where they
// are not on the agent's PATH, on the threadpool. Both ways must carry the same protocol.
for (const io of ['cat', 'threadpool'] as const) {
describe(`data channel: agent and coved over a FIFO pair (${io === 'cat' ? 'sessions on the port bridge' : 'sessions on the threadpool: no sh or cat on the PATH'})`, () => {
  let agent: RunningAgent;
  let qemu: net.Server;
  let dataSock: string;
  let docker: net.Server;
  /** What the fake dockerd does with each connection. */
  let dockerHandler: (c: net.Socket) => void = (c) => c.end();
  const dockerConns: net.Socket[] = [];
  let link: DataLink;
  const logs: string[] = [];
  /** The bridged host connection now open, so a test can cut it as a vanished coved would. */
  let current: () => net.Socket | null = () => null;

  before(async () => {
    // The agent's dockerd watcher would connect to the fake dockerd every 200 ms and take whichever
    // handler a test has set; polled hourly, it tries once at start (before the fake listens).
    agent = await startAgent({ data: true, env: { COVE_AGENT_POLL_MS: '3600000', ...(io === 'threadpool' ? { COVE_AGENT_SYSTEM_PATH: '/nonexistent' } : {}) } });
    docker = net.createServer({ allowHalfOpen: true }, (c) => {
      // A stream reset while the fake dockerd still writes (the agent destroys its socket).
      c.on('error', () => undefined);
      dockerConns.push(c);
      dockerHandler(c);
    });
    await new Promise<void>((r) => docker.listen(agent.dockerSock, r));
    dataSock = path.join(agent.dir, 'data.sock');
    // qemu's chardev: one host at a time; its bytes go to the port, the port's to it.
    ({ server: qemu, current } = await serveDataPort(agent, dataSock));
    link = new DataLink({ dataSock, log: (m) => logs.push(m), helloTimeoutMs: 5000, firstHelloTimeoutMs: 5000 });
    const up = new Promise<void>((r) => link.once('up', r));
    link.start();
    await within(up, 15_000, `the data link to come up; coved said:\n${logs.join('\n')}\nagent:\n${agent.log()}`);
  });

  after(async () => {
    link?.close();
    qemu?.close();
    docker?.close();
    for (const c of dockerConns) c.destroy();
    await agent?.stop();
  });

  test(`sessions run ${io === 'cat' ? 'on the port bridge (sh and cat): a native socket for HTTP/2' : 'on the threadpool, and the agent says why'}`, () => {
    const bridgeFailed = /sessions are read and written on the threadpool from now on/.test(agent.log());
    assert.equal(bridgeFailed, io === 'threadpool', `agent:\n${agent.log()}`);
    assert.match(agent.log(), /data: host connected, data#1/);
  });

  test('a CONNECT to docker.sock reaches dockerd; the host half-closes and the answer still comes', async () => {
    dockerHandler = (c) => {
      const got: Buffer[] = [];
      c.on('data', (d: Buffer) => got.push(d));
      c.on('end', () => c.end(`got ${Buffer.concat(got).toString()}`));
    };
    const s = await link.open({ kind: 'docker' });
    const answer = readAll(s);
    s.end('GET /_ping');
    assert.equal((await within(answer, 10_000, 'the answer after the host EOF')).toString(), 'got GET /_ping');
  });

  test('the guest side half-closes first and the host keeps sending (a hijacked stream with stdin after stdout ends)', async () => {
    let received: Promise<string> = Promise.resolve('');
    dockerHandler = (c) => {
      c.end('output done');
      received = new Promise((resolve) => {
        let text = '';
        c.on('data', (d: Buffer) => (text += d.toString()));
        c.on('end', () => resolve(text));
      });
    };
    const s = await link.open({ kind: 'docker' });
    const out = await within(readAll(s), 10_000, 'the guest EOF');
    assert.equal(out.toString(), 'output done');
    s.write('stdin after ');
    s.end('stdout ended');
    assert.equal(await within(waitFor(() => received, 5000, 'dockerd to get the stdin'), 10_000, 'the stdin'), 'stdin after stdout ended');
  });

  test("Node's HTTP client sends a request with a body intact (a writev of a latin1 head, the body and '')", async () => {
    let raw: Promise<string> = Promise.resolve('');
    dockerHandler = (c) => {
      raw = new Promise((resolve) => {
        let text = '';
        c.on('data', (d: Buffer) => {
          text += d.toString('latin1');
          if (text.endsWith('}')) {
            resolve(text);
            c.end('HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          }
        });
      });
    };
    const s = await link.open({ kind: 'docker' });
    const body = JSON.stringify({ Image: 'busybox', Cmd: ['true'] });
    const status = await within(
      new Promise<number>((resolve, reject) => {
        const req = http.request({ createConnection: () => s, method: 'POST', path: '/v1.45/containers/create', headers: { 'Content-Type': 'application/json', 'Content-Length': String(body.length) } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(Buffer.from(body));
      }),
      10_000,
      'the answer to a create',
    );
    assert.equal(status, 201);
    assert.match(await raw, /^POST \/v1\.45\/containers\/create HTTP\/1\.1\r\n[\s\S]*\r\n\r\n\{"Image":"busybox","Cmd":\["true"\]\}$/);
  });

  test('16 MiB each way through a guest TCP port, byte for byte, on 4 streams at once', async () => {
    const tcp = net.createServer({ allowHalfOpen: true }, (c) => {
      // Echo with a hash: sends back what it got, then ends.
      c.pipe(c);
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as net.AddressInfo).port;
    try {
      const one = async () => {
        const payload = crypto.randomBytes(16 * 1024 * 1024);
        const s = await link.open({ kind: 'tcp', host: '127.0.0.1', port });
        const back = readAll(s);
        s.end(payload);
        const got = await within(back, 120_000, 'the echoed payload');
        assert.equal(got.length, payload.length);
        assert.ok(got.equals(payload), 'the bytes came back unchanged');
      };
      await Promise.all([one(), one(), one(), one()]).catch((e: unknown) => {
        throw new Error(`${(e as Error).message}\ncoved:\n${logs.join('\n')}\nagent:\n${agent.log()}`, { cause: e });
      });
    } finally {
      tcp.close();
    }
  });

  test('a target nobody listens on is an error of the target; a target the guest refuses sends coved to SSH; the link stays up', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    await assert.rejects(link.open({ kind: 'tcp', host: '127.0.0.1', port }), (e: unknown) => e instanceof DataTargetError && /ECONNREFUSED/.test(e.message));
    // A name instead of an IP address: the guest answers 400 and resolves nothing; coved takes a
    // refusal as "this agent does not serve that target" and would use SSH for it.
    await assert.rejects(link.open({ kind: 'tcp', host: 'localhost', port: 22 }), (e: unknown) => isDataLinkDown(e) && /refused localhost:22/.test(e.message));
    assert.ok(link.isUp, 'the link stays up');
  });

  test('the pool hands out ready streams, drops ones dockerd closed, and refills', async () => {
    // The agent's own dockerd watcher connects too (GET /_ping): pooled connections are the ones
    // that are open and have been sent nothing.
    const quiet = new Set<net.Socket>();
    dockerHandler = (c) => {
      quiet.add(c);
      c.on('data', (d: Buffer) => {
        quiet.delete(c);
        c.write(`echo:${d.toString()}`);
      });
      c.on('end', () => c.end());
      c.on('close', () => quiet.delete(c));
    };
    const pool = new StreamPool({ open: () => link.open({ kind: 'docker' }), size: 2, refillDelayMs: 50, maxAgeMs: 60_000, log: (m) => logs.push(m) });
    pool.start();
    try {
      await waitFor(() => pool.size === 2 && quiet.size === 2, 10_000, 'the pool to fill');
      const s = pool.take();
      assert.ok(s, 'a ready stream');
      assert.equal(pool.size, 1);
      const back = new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString())));
      s.write('hi');
      assert.equal(await within(back, 5000, 'the answer on a pooled stream'), 'echo:hi');
      s.end();
      await waitFor(() => pool.size === 2 && quiet.size === 2, 10_000, 'the pool to refill after a take');
      // dockerd closes the idle ones (its header timeout): the pool notices and opens new ones.
      const idle = [...quiet];
      for (const c of idle) c.end();
      await waitFor(() => pool.size === 2 && quiet.size === 2 && idle.every((c) => !quiet.has(c)), 10_000, 'the pool to replace streams dockerd closed');
    } finally {
      pool.stop();
    }
    assert.equal(pool.size, 0);
    await waitFor(() => quiet.size === 0, 10_000, 'the dropped streams to close in the guest');
  });

  test('coved vanishes mid-transfer: the next host gets a fresh session past the stale bytes', async () => {
    const tcp = net.createServer((c) => {
      // Streams until the connection breaks: the agent is writing when the host leaves.
      const chunk = Buffer.alloc(64 * 1024, 7);
      const pump = () => {
        while (c.write(chunk));
      };
      c.on('drain', pump);
      c.on('error', () => undefined);
      pump();
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as net.AddressInfo).port;
    try {
      const s = await link.open({ kind: 'tcp', host: '127.0.0.1', port });
      s.on('error', () => undefined);
      await new Promise<void>((resolve) => s.once('data', () => resolve()));
      s.pause();
      const down = new Promise<void>((r) => link.once('down', r));
      const up = new Promise<void>((r) => link.once('up', r));
      current()?.destroy(); // As when coved is killed: its end of qemu's socket closes.
      await within(down, 10_000, 'the link to notice');
      await within(up, 30_000, `the link to come back; coved said:\n${logs.join('\n')}\nagent:\n${agent.log()}`);
      dockerHandler = (c) => c.end('fresh');
      const again = await link.open({ kind: 'docker' });
      again.end();
      assert.equal((await within(readAll(again), 10_000, 'an answer on the new session')).toString(), 'fresh');
    } finally {
      tcp.close();
    }
  });

  test('a reset (the agent link went down: an agent restart) brings the session back', async () => {
    const down = new Promise<void>((r) => link.once('down', r));
    const up = new Promise<void>((r) => link.once('up', r));
    link.reset('the agent link went down');
    await within(down, 5000, 'the link to go down');
    await within(up, 30_000, `the link to come back after a reset; coved said:\n${logs.join('\n')}`);
    dockerHandler = (c) => c.end('again');
    const s = await link.open({ kind: 'docker' });
    s.end();
    assert.equal((await within(readAll(s), 10_000, 'an answer after the reset')).toString(), 'again');
  });

  test('a host skips stale bytes ahead of its hello answer, and refuses bytes after it', async () => {
    const hello = 'COVE-DATA/1 ' + '0'.repeat(32) + '\n';
    const server = net.createServer((c) => c.end(Buffer.concat([crypto.randomBytes(100_000), Buffer.from(hello)])));
    const sock = path.join(agent.dir, 'stale.sock');
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const c = net.connect(sock);
      await awaitHello(c, hello, 5000);
      c.destroy();
      const server2 = net.createServer((x) => x.end(`${hello}extra`));
      const sock2 = path.join(agent.dir, 'stale2.sock');
      await new Promise<void>((r) => server2.listen(sock2, r));
      const c2 = net.connect(sock2);
      await assert.rejects(awaitHello(c2, hello, 5000), /after its hello/);
      c2.destroy();
      server2.close();
    } finally {
      server.close();
      fs.rmSync(sock, { force: true });
    }
  });
});
}
