// The agent's SSH service, end to end over its unix socket: exec, PTY shells, SFTP, streamlocal,
// direct-tcpip and authentication. The agent is the real bundle, run as a child process.
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Client, ClientChannel, SFTPWrapper } from 'ssh2';
import { collect, connect, exec, makeKeys, startAgent, waitFor, within, type RunningAgent } from './agent-harness';

function hasTools(...names: string[]): boolean {
  return names.every((name) => spawnSync('sh', ['-c', `command -v ${name}`]).status === 0);
}

describe('agent SSH service', () => {
  let agent: RunningAgent;
  let client: Client;

  before(async () => {
    agent = await startAgent();
    client = await connect(agent);
  });
  after(async () => {
    client?.end();
    await agent?.stop();
  });

  test('tcpip-forward listens on guest loopback only and hands connections to the client', async () => {
    const refused = await new Promise<Error | undefined>((resolve) => client.forwardIn('0.0.0.0', 0, (err) => resolve(err)));
    assert.ok(refused, 'a wildcard bind is refused');
    const port = await new Promise<number>((resolve, reject) => client.forwardIn('127.0.0.1', 0, (err, p) => (err ? reject(err) : resolve(p))));
    assert.ok(port > 0);
    const served = new Promise<string>((resolve) => {
      client.once('tcp connection', (info, accept) => {
        const ch = accept();
        ch.end(`from-host-side:${info.destPort}\n`);
        ch.resume();
        resolve(`${info.destIP}:${info.destPort}`);
      });
    });
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString()));
    await within(new Promise((r) => sock.on('close', r)), 10_000, 'the forwarded connection to close');
    assert.equal(await served, `127.0.0.1:${port}`);
    assert.equal(got, `from-host-side:${port}\n`);
    await new Promise<void>((resolve, reject) => client.unforwardIn('127.0.0.1', port, (err) => (err ? reject(err) : resolve())));
    const closed = await new Promise<boolean>((resolve) => net.connect(port, '127.0.0.1').on('error', () => resolve(true)).on('connect', () => resolve(false)));
    assert.ok(closed, 'cancel-tcpip-forward closes the listener');
  });

  test('exec returns the exit code', async () => {
    const r = await exec(client, 'exit 7');
    assert.equal(r.code, 7);
  });

  test('exec keeps stdout and stderr apart', async () => {
    const r = await exec(client, 'echo to-out; echo to-err >&2');
    assert.equal(r.stdout, 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
    assert.equal(r.code, 0);
  });

  test('exec pipes stdin, with EOF', async () => {
    const input = crypto.randomBytes(300_000).toString('base64');
    const r = await exec(client, 'wc -c', { stdin: input });
    assert.equal(r.stdout.trim(), String(input.length));
  });

  test('exec streams large output with flow control', async () => {
    const stream = await new Promise<ClientChannel>((resolve, reject) => client.exec('head -c 20000000 /dev/zero', (err, s) => (err ? reject(err) : resolve(s))));
    let bytes = 0;
    stream.on('data', (d: Buffer) => (bytes += d.length));
    const r = await within(collect(stream), 30_000, 'the 20 MB output');
    assert.equal(r.code, 0);
    assert.equal(bytes, 20_000_000);
  });

  test('OpenSSH can exec through the unix socket', { skip: !hasTools('ssh', 'socat') && 'ssh or socat is not installed' }, async () => {
    const key = path.join(agent.dir, 'id_ed25519');
    fs.writeFileSync(key, agent.keys.clientPrivate, { mode: 0o600 });
    const out = await within(
      new Promise<{ code: number | null; stdout: string }>((resolve) => {
        const child = spawn('ssh', [
          '-F', '/dev/null', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
          '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes', '-o', `ProxyCommand=socat - UNIX-CONNECT:${agent.socket}`,
          'root@cove', 'echo openssh-ok; exit 5',
        ], { stdio: ['ignore', 'pipe', 'inherit'] });
        let stdout = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.on('close', (code) => resolve({ code, stdout }));
      }),
      15_000,
      'ssh to exit',
    );
    assert.equal(out.stdout, 'openssh-ok\n');
    assert.equal(out.code, 5);
  });

  test('exec honours env requests and COVE_CWD', async () => {
    const r = await exec(client, 'echo "$FOO"; pwd', { env: { FOO: 'bar baz', COVE_CWD: agent.dir } });
    assert.equal(r.stdout, `bar baz\n${agent.dir}\n`);
  });

  test('exec reports a death by signal as exit-signal', async () => {
    const r = await exec(client, 'kill -TERM $$');
    assert.equal(r.signal, 'SIGTERM'); // The wire says TERM; ssh2's client prefixes SIG.
  });

  test('signal requests reach the command', async () => {
    const r = await within(
      new Promise<Awaited<ReturnType<typeof collect>>>((resolve, reject) => {
        client.exec('echo started; sleep 30', (err, stream) => {
          if (err) return reject(err);
          const done = collect(stream);
          // dash -c defers a SIGINT that lands between two commands, so ask until it takes.
          let timer: NodeJS.Timeout | undefined;
          stream.once('data', () => {
            stream.signal('INT');
            timer = setInterval(() => stream.signal('INT'), 300);
          });
          resolve(done.finally(() => clearInterval(timer)));
        });
      }),
      10_000,
      'the signalled exec to end',
    );
    assert.equal(r.signal, 'SIGINT', JSON.stringify(r));
  });

  test('a PTY shell echoes input and sees window changes', async () => {
    const stream = await new Promise<ClientChannel>((resolve, reject) =>
      client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, s) => (err ? reject(err) : resolve(s))),
    );
    let out = '';
    stream.on('data', (d: Buffer) => (out += d.toString()));
    const closed = collect(stream);
    stream.write('echo marker-$((6*7)); stty size; tty\n');
    await waitFor(() => /marker-42/.test(out) && /24 80/.test(out) && /\/dev\/pts\/\d+/.test(out), 10_000, `the shell to answer (got ${JSON.stringify(out)})`);
    assert.match(out, /echo marker-\$\(\(6\*7\)\)/, 'the pty echoes what was typed');
    assert.match(out, /\/dev\/pts\/\d+/);
    stream.setWindow(40, 132, 0, 0);
    // The resize is applied asynchronously; ask until the shell sees it.
    await waitFor(
      async () => {
        stream.write('stty size\n');
        await new Promise((resolve) => setTimeout(resolve, 200));
        return /40 132/.test(out);
      },
      10_000,
      `the shell to see 40x132 (got ${JSON.stringify(out.slice(-300))})\n${agent.log()}`,
    );
    stream.write('exit 3\n');
    const r = await within(closed, 10_000, 'the shell to exit');
    assert.equal(r.code, 3);
  });

  test('exec with a PTY runs the command on a terminal', async () => {
    const r = await within(
      new Promise<Awaited<ReturnType<typeof collect>>>((resolve, reject) =>
        client.exec('test -t 0 && stty size', { pty: { rows: 30, cols: 100, term: 'vt100' } }, (err, s) => (err ? reject(err) : resolve(collect(s)))),
      ),
      10_000,
      'the pty exec',
    );
    assert.equal(r.code, 0);
    assert.match(r.stdout, /30 100/);
  });

  describe('sftp', () => {
    let sftp: SFTPWrapper;
    before(async () => {
      sftp = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
    });
    after(() => sftp?.end());

    const call = <T>(what: string, fn: (cb: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> =>
      within(new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value as T)))), 15_000, `sftp ${what}`);

    test('put and get copy a file byte for byte', async () => {
      const local = path.join(agent.dir, 'local.bin');
      const remote = path.join(agent.dir, 'remote.bin');
      const back = path.join(agent.dir, 'back.bin');
      const bytes = crypto.randomBytes(3 * 1024 * 1024 + 17);
      fs.writeFileSync(local, bytes);
      await call('fastPut', (cb) => sftp.fastPut(local, remote, cb));
      assert.ok(fs.readFileSync(remote).equals(bytes), 'the uploaded file matches');
      await call('fastGet', (cb) => sftp.fastGet(remote, back, cb));
      assert.ok(fs.readFileSync(back).equals(bytes), 'the downloaded file matches');
      const st = await call<{ size: number }>('stat', (cb) => sftp.stat(remote, cb));
      assert.equal(st.size, bytes.length);
    });

    test('readdir lists a large directory in batches', async () => {
      const dir = path.join(agent.dir, 'many');
      fs.mkdirSync(dir);
      for (let i = 0; i < 700; i++) fs.writeFileSync(path.join(dir, `f${i}`), '');
      const list = await call<{ filename: string }[]>('readdir', (cb) => sftp.readdir(dir, cb));
      assert.equal(list.filter((e) => e.filename.startsWith('f')).length, 700);
    });

    test('mkdir, readdir, rename, setstat, remove, rmdir, realpath', async () => {
      const dir = path.join(agent.dir, 'd');
      await call('mkdir', (cb) => sftp.mkdir(dir, cb));
      await call('writeFile', (cb) => sftp.writeFile(path.join(dir, 'a.txt'), 'hello', cb));
      await call('rename', (cb) => sftp.rename(path.join(dir, 'a.txt'), path.join(dir, 'b.txt'), cb));
      await call('chmod', (cb) => sftp.chmod(path.join(dir, 'b.txt'), 0o600, cb));
      assert.equal(fs.statSync(path.join(dir, 'b.txt')).mode & 0o777, 0o600);
      const list = await call<{ filename: string }[]>('readdir', (cb) => sftp.readdir(dir, cb));
      assert.deepEqual(list.map((e) => e.filename).filter((n) => !n.startsWith('.')), ['b.txt']);
      const text = await call<Buffer>('readFile', (cb) => sftp.readFile(path.join(dir, 'b.txt'), cb));
      assert.equal(text.toString(), 'hello');
      const real = await call<string>('realpath', (cb) => sftp.realpath(`${dir}/../d/.`, cb));
      assert.equal(real, fs.realpathSync(dir));
      await assert.rejects(call('stat missing', (cb) => sftp.stat(path.join(dir, 'nope'), cb)), /No such file/);
      await call('unlink', (cb) => sftp.unlink(path.join(dir, 'b.txt'), cb));
      await call('rmdir', (cb) => sftp.rmdir(dir, cb));
      assert.equal(fs.existsSync(dir), false);
    });
  });

  describe('streamlocal', () => {
    let server: http.Server;
    let sockPath: string;
    before(async () => {
      sockPath = path.join(agent.dir, 'http.sock');
      server = http.createServer((req, res) => {
        let body = 0;
        req.on('data', (d: Buffer) => (body += d.length));
        req.on('end', () => res.end(`${req.url} ${body}`));
      });
      await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    });
    after(() => server?.close());

    const openLocal = (socketPath: string): Promise<ClientChannel> =>
      within(
        new Promise((resolve, reject) => client.openssh_forwardOutStreamLocal(socketPath, (err, s) => (err ? reject(err) : resolve(s)))),
        10_000,
        `streamlocal ${socketPath}`,
      );

    const readAll = (stream: ClientChannel): Promise<string> =>
      within(
        new Promise((resolve) => {
          let text = '';
          stream.on('data', (d: Buffer) => (text += d.toString()));
          stream.on('end', () => resolve(text));
        }),
        10_000,
        'the streamlocal response',
      );

    test('carries many concurrent HTTP requests', async () => {
      const answers = await Promise.all(
        Array.from({ length: 12 }, async (_, i) => {
          const stream = await openLocal(sockPath);
          const body = 'x'.repeat(1000 * i);
          const response = readAll(stream);
          stream.write(`POST /r${i} HTTP/1.1\r\nHost: docker\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
          return { i, text: await response };
        }),
      );
      for (const { i, text } of answers) {
        assert.match(text, /^HTTP\/1\.1 200 OK/);
        assert.ok(text.endsWith(`/r${i} ${1000 * i}`), `answer ${i}: ${text.slice(-40)}`);
      }
    });

    test('half-close: client EOF, then the response still arrives', async () => {
      const p = path.join(agent.dir, 'count.sock');
      const counter = net.createServer({ allowHalfOpen: true }, (sock) => {
        let n = 0;
        sock.on('data', (d: Buffer) => (n += d.length));
        sock.on('end', () => sock.end(`got ${n}`));
      });
      await new Promise<void>((resolve) => counter.listen(p, resolve));
      try {
        const stream = await openLocal(p);
        const response = readAll(stream);
        stream.end(Buffer.alloc(200_000, 1));
        assert.equal(await response, 'got 200000');
      } finally {
        counter.close();
      }
    });

    test('half-close: server EOF, then the client may still send', async () => {
      const p = path.join(agent.dir, 'first.sock');
      let received = '';
      const gotAll = new Promise<void>((resolve) => {
        const s = net.createServer({ allowHalfOpen: true }, (sock) => {
          sock.end('server-done');
          sock.on('data', (d: Buffer) => (received += d.toString()));
          sock.on('end', () => resolve());
        });
        s.listen(p);
        after(() => s.close());
      });
      await waitFor(() => fs.existsSync(p), 5000, 'the test server socket');
      const stream = await openLocal(p);
      const response = readAll(stream);
      assert.equal(await response, 'server-done');
      stream.end('client-after-eof');
      await within(gotAll, 10_000, 'the server to read the late client bytes and EOF');
      assert.equal(received, 'client-after-eof');
    });

    test('a missing socket is an open failure', async () => {
      await assert.rejects(openLocal(path.join(agent.dir, 'missing.sock')));
    });
  });

  test('direct-tcpip reaches a loopback TCP server', async () => {
    const echo = net.createServer((sock) => sock.pipe(sock));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    try {
      const port = (echo.address() as net.AddressInfo).port;
      const stream = await within(
        new Promise<ClientChannel>((resolve, reject) => client.forwardOut('127.0.0.1', 0, '127.0.0.1', port, (err, s) => (err ? reject(err) : resolve(s)))),
        10_000,
        'direct-tcpip open',
      );
      const got = new Promise<string>((resolve) => {
        let text = '';
        stream.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.length >= 11) resolve(text);
        });
      });
      stream.write('ping-tcpip!');
      assert.equal(await within(got, 10_000, 'the echo'), 'ping-tcpip!');
      stream.end();
    } finally {
      echo.close();
    }
  });

  test('a client without an authorized key is refused', async () => {
    const stranger = makeKeys();
    await assert.rejects(connect(agent, { privateKey: stranger.clientPrivate }), /authentication methods failed/);
    await waitFor(() => /refused ssh-ed25519 key/.test(agent.log()), 5000, 'the refusal in the agent log');
  });

  test('the unix socket is mode 0600', () => {
    assert.equal(fs.statSync(agent.socket).mode & 0o777, 0o600);
  });
});
