// The Docker socket's HTTP proxy and its bind-source guard, against a fake dockerd (a real HTTP
// server on a unix socket): keep-alive on one channel per client connection, streaming both ways,
// hijacked streams with half-close both ways, and the guard's refusals, word for word. Every case
// runs twice: with the "guest" reached by a plain unix connection, and through real SSH channels
// (ssh2, with the agent's own streamlocal bridge), which is what coved hands the proxy.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Client, Server as SshServer } from 'ssh2';
import { bridge } from '../../agent/forward';
import { MAX_CREATE_BODY_BYTES, allowedSource, isCreateRequest, refusalMessage, type BindPolicy } from '../../vmm-host/coved/bind-guard';
import { startDockerProxy } from '../../vmm-host/coved/docker-proxy';
import { keyPair } from '../../vmm-host/coved/keys';

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
};

async function waitFor(what: string, ms: number, check: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const POLICY: BindPolicy = { sandbox: 'x', workspace: '/work/ws', shared: ['/work/ws', '/data/extra'], mountSpecs: ['/host/extra:/data/extra'] };

/** The guard's message for `source` under POLICY, as the client must read it. */
const refusal = (source: string) =>
  `cove: the bind-mount source ${source} is not shared with sandbox x, so the container would see the guest's own ${source}, not the host's; ` +
  'share it: cove up /work/ws --name x --mount /host/extra:/data/extra --mount ' +
  `${source}, then \`cove stop x && cove start x\` (mounts change on the next start); ` +
  'or let containers bind any guest path: cove up /work/ws --name x --mount /host/extra:/data/extra --bind-guard=off';

/** What the fake dockerd saw. */
interface GuestLog {
  connections: number;
  open: number;
  creates: Array<{ body: string; rawHeaders: string[] }>;
  hijackBodies: string[];
  /** Data a hijacked stream got after the guest had ended its own side. */
  lateStdin: string[];
}

interface Fixture {
  dir: string;
  proxyPath: string;
  guest: http.Server;
  log: GuestLog;
  /** Lets the fake dockerd's /stream and /wait go on. */
  release: () => void;
  setPolicy: (p: BindPolicy | null) => void;
  setUp: (up: boolean) => void;
  proxy: net.Server;
  close: () => Promise<void>;
}

/** The fake dockerd: a few endpoints that show what reached it and how. */
function fakeDockerd(log: GuestLog, gate: { wait: Promise<void> }): http.Server {
  const server = http.createServer({ requireHostHeader: false, maxHeaderSize: 2 * 1024 * 1024 }, (req, res) => {
    const url = req.url ?? '';
    if (url === '/_ping') {
      res.writeHead(200, ['Api-Version', '1.45', 'X-CusTom-Case', 'kept', 'Content-Type', 'text/plain', 'Content-Length', '2']);
      res.end('OK');
      return;
    }
    if (url === '/headers') {
      const body = JSON.stringify(req.rawHeaders);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (url === '/stream') {
      res.writeHead(200, { 'Content-Type': 'application/json' }); // chunked
      res.write('{"first":1}\n');
      void gate.wait.then(() => res.end('{"second":2}\n'));
      return;
    }
    if (url === '/wait') {
      // As dockerd's /containers/{id}/wait: the head at once, the body when the container exits.
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.flushHeaders();
      void gate.wait.then(() => res.end('{"StatusCode":0}\n'));
      return;
    }
    if (url === '/upload') {
      const hash = createHash('sha256');
      let bytes = 0;
      let firstAt = 0;
      req.on('data', (d: Buffer) => {
        if (bytes === 0) firstAt = Date.now();
        bytes += d.length;
        hash.update(d);
      });
      req.on('end', () => res.end(JSON.stringify({ bytes, sha256: hash.digest('hex'), firstAt })));
      return;
    }
    if (/\/containers\/create/.test(url)) {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        log.creates.push({ body: Buffer.concat(chunks).toString('utf8'), rawHeaders: req.rawHeaders });
        res.writeHead(201, { 'Content-Type': 'application/json' });
        res.end('{"Id":"c0ffee","Warnings":[]}');
      });
      return;
    }
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end('{"message":"page not found"}');
  });
  server.on('connection', (c: net.Socket) => {
    log.connections++;
    log.open++;
    c.on('close', () => log.open--);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    // As dockerd hijacks: a 101, then the raw stream. `head` holds the request body (exec start's
    // JSON), which this dockerd takes as the body's length says.
    const length = Number(req.headers['content-length'] ?? 0);
    log.hijackBodies.push(head.subarray(0, length).toString('utf8'));
    let stdin = head.subarray(length).toString('utf8');
    socket.write('HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n');
    if (req.url?.includes('guest-ends-first')) {
      // The container's output ends first (its stdout closed); the client may still send.
      socket.end('bye\n');
      socket.on('data', (d: Buffer) => (stdin += d.toString()));
      socket.on('end', () => log.lateStdin.push(stdin));
      return;
    }
    // `docker exec -i … cat`: everything the client sends, echoed once its stdin ends.
    socket.on('data', (d: Buffer) => (stdin += d.toString()));
    socket.on('end', () => socket.end(`echo:${stdin}`));
  });
  return server;
}

/** A guest reached through real SSH channels: an ssh2 server bridging streamlocal as the agent does. */
async function sshOpener(dir: string): Promise<{ open: (p: string) => Promise<Duplex>; close: () => void }> {
  const hostKey = keyPair();
  const server = new SshServer({ hostKeys: [hostKey.private] }, (conn) => {
    conn.on('authentication', (ctx) => ctx.accept());
    conn.on('ready', () => {
      conn.on('openssh.streamlocal', (accept, reject, info) => {
        const socket = net.connect({ path: info.socketPath, allowHalfOpen: true });
        socket.once('error', () => reject());
        socket.once('connect', () => bridge(accept(), socket, () => undefined));
      });
    });
    conn.on('error', () => undefined);
  });
  const sock = path.join(dir, 'ssh.sock');
  await new Promise<void>((r) => server.listen(sock, () => r()));
  const client = new Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', reject);
    client.connect({ sock: net.connect(sock), username: 'cove' });
  });
  return {
    open: (p) => new Promise((resolve, reject) => client.openssh_forwardOutStreamLocal(p, (err, ch) => (err ? reject(err) : resolve(ch)))),
    close: () => {
      client.end();
      server.close();
    },
  };
}

async function setUp(transport: 'unix' | 'ssh'): Promise<Fixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-dproxy-'));
  const log: GuestLog = { connections: 0, open: 0, creates: [], hijackBodies: [], lateStdin: [] };
  let release: () => void = () => undefined;
  const gate = { wait: Promise.resolve() };
  const resetGate = () => {
    gate.wait = new Promise<void>((r) => (release = r));
  };
  resetGate();
  const guest = fakeDockerd(log, gate);
  const guestPath = path.join(dir, 'guest.sock');
  await new Promise<void>((r) => guest.listen(guestPath, () => r()));
  const ssh = transport === 'ssh' ? await sshOpener(dir) : null;
  const openUnix = () =>
    new Promise<Duplex>((resolve, reject) => {
      const c = net.connect({ path: guestPath, allowHalfOpen: true });
      c.once('connect', () => resolve(c));
      c.once('error', reject);
    });
  let policy: BindPolicy | null = POLICY;
  let up = true;
  const proxyPath = path.join(dir, 'docker.sock');
  const proxy = await startDockerProxy({
    path: proxyPath,
    open: () => (!up ? Promise.reject(new Error('sandbox x is stopped; start it with `cove start x`')) : ssh ? ssh.open(guestPath) : openUnix()),
    unavailable: (err) => `cove: ${err.message}`,
    policy: () => policy,
    log: () => undefined,
  });
  return {
    dir,
    proxyPath,
    guest,
    log,
    release: () => {
      release();
      resetGate();
    },
    setPolicy: (p) => (policy = p),
    setUp: (u) => (up = u),
    proxy,
    close: async () => {
      await within(new Promise<void>((r) => proxy.close(() => r())), 5000, 'the proxy closing');
      ssh?.close();
      guest.closeAllConnections();
      await new Promise<void>((r) => guest.close(() => r()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

/** One request to the proxy; `body` may be a Buffer (with its length) or chunks (sent chunked). */
function call(f: Fixture, method: string, url: string, opts: { body?: Buffer | string; chunked?: boolean; headers?: Record<string, string>; agent?: http.Agent } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined && !opts.chunked) headers['Content-Length'] = String(Buffer.byteLength(opts.body));
    const req = http.request({ socketPath: f.proxyPath, method, path: url, headers, agent: opts.agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (opts.body !== undefined && opts.chunked) {
      const b = Buffer.from(opts.body);
      const half = Math.floor(b.length / 2);
      req.write(b.subarray(0, half));
      req.end(b.subarray(half));
    } else {
      req.end(opts.body);
    }
  });
}

const create = (f: Fixture, config: unknown, url = '/v1.45/containers/create?name=web') => call(f, 'POST', url, { body: JSON.stringify(config), headers: { 'Content-Type': 'application/json' } });

const messageOf = (a: Answer) => (JSON.parse(a.body) as { message: string }).message;

/** A raw client connection for hijacked streams; resolves with everything read once the proxy ends its side. */
function hijack(f: Fixture, head: string): { socket: net.Socket; read: Promise<string>; ended: Promise<void> } {
  const socket = net.connect({ path: f.proxyPath, allowHalfOpen: true });
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString()));
  const ended = new Promise<void>((r) => socket.on('end', () => r()));
  socket.write(head);
  return { socket, read: ended.then(() => got), ended };
}

describe("the guard's rules", () => {
  test('which requests are container creates: as dockerd routes them', () => {
    for (const url of ['/containers/create', '/v1.45/containers/create?name=web', '/v1.24/containers/create/', '//containers/create', '/containers/%63reate', '/v1.45/x/../containers/create']) {
      assert.equal(isCreateRequest('POST', url), true, url);
    }
    for (const [method, url] of [['GET', '/containers/create'], ['POST', '/containers/createx'], ['POST', '/v1.45/containers/abc/start'], ['POST', '/volumes/create'], ['POST', '/containers/%zz']]) {
      assert.equal(isCreateRequest(method, url), false, `${method} ${url}`);
    }
  });

  test('a shared folder covers what is inside it, not a sibling that shares its prefix', () => {
    assert.equal(allowedSource('/work/ws', POLICY), true);
    assert.equal(allowedSource('/work/ws/a/b/', POLICY), true);
    assert.equal(allowedSource('/work/wsx', POLICY), false);
    assert.equal(allowedSource('/data/extra/f', POLICY), true);
    assert.equal(allowedSource('/host/extra', POLICY), false, 'a mount is checked at its guest path');
    assert.equal(allowedSource('/var/run/docker.sock', POLICY), true);
    assert.equal(allowedSource('/var/run/docker.socket', POLICY), false);
    assert.equal(allowedSource('/', POLICY), false);
  });

  test('the hint quotes what a shell would split, and / gets no --mount', () => {
    const spaced: BindPolicy = { sandbox: 'x', workspace: '/home/me/my project', shared: ['/home/me/my project'], mountSpecs: [] };
    assert.equal(
      refusalMessage("/srv/it's here", spaced),
      "cove: the bind-mount source /srv/it's here is not shared with sandbox x, so the container would see the guest's own /srv/it's here, not the host's; " +
        "share it: cove up '/home/me/my project' --name x --mount '/srv/it'\\''s here', then `cove stop x && cove start x` (mounts change on the next start); " +
        "or let containers bind any guest path: cove up '/home/me/my project' --name x --bind-guard=off",
    );
    assert.match(refusalMessage('/', POLICY), /the bind-mount source \/ is not shared with sandbox x, so the container would see the guest's own \/, not the host's; share the folders it needs; or let/);
  });
});

for (const transport of ['unix', 'ssh'] as const) {
  describe(`the Docker socket proxy (guest over ${transport})`, () => {
    let f: Fixture;
    before(async () => {
      f = await setUp(transport);
    });
    after(async () => {
      await f.close();
    });

    test('the socket is 0600', () => {
      assert.equal(fs.statSync(f.proxyPath).mode & 0o777, 0o600);
    });

    test('keep-alive requests of one client connection share one guest channel; each connection has its own', async () => {
      const before = f.log.connections;
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = 0; i < 5; i++) {
        const a = await call(f, 'GET', '/_ping', { agent });
        assert.equal(a.status, 200);
        assert.equal(a.body, 'OK');
      }
      assert.equal(f.log.connections - before, 1, 'five requests, one guest channel');
      const other = await call(f, 'GET', '/_ping');
      assert.equal(other.body, 'OK');
      assert.equal(f.log.connections - before, 2, 'a second client connection has a channel of its own');
      agent.destroy();
      await waitFor('the guest channels to close with their client connections', 5000, () => f.log.open === 0);
    });

    test('a client that sends its request and then its EOF still gets the answer', async () => {
      const answer = await new Promise<string>((resolve, reject) => {
        const c = net.connect({ path: f.proxyPath, allowHalfOpen: true });
        let text = '';
        c.on('data', (d: Buffer) => (text += d.toString()));
        c.on('end', () => resolve(text));
        c.on('error', reject);
        c.end('GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n');
      });
      assert.match(answer, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nOK$/);
    });

    test('headers pass as sent, both ways (names, case, a 700 KiB X-Registry-Auth)', async () => {
      const auth = 'A'.repeat(700 * 1024);
      const a = await call(f, 'GET', '/headers', { headers: { 'X-Registry-Auth': auth, 'X-MiXeD-Case': 'v' } });
      assert.equal(a.status, 200);
      const raw = JSON.parse(a.body) as string[];
      assert.equal(raw[raw.indexOf('X-Registry-Auth') + 1].length, auth.length);
      assert.ok(raw.includes('X-MiXeD-Case'), raw.filter((_, i) => i % 2 === 0).join(', '));
      const ping = await call(f, 'GET', '/_ping');
      assert.ok(ping.rawHeaders.includes('X-CusTom-Case'), ping.rawHeaders.join(', '));
      assert.equal(ping.headers['api-version'], '1.45');
    });

    test('a head over 1 MiB is refused with a message', async () => {
      const socket = net.connect({ path: f.proxyPath });
      let got = '';
      socket.on('data', (d: Buffer) => (got += d.toString()));
      socket.on('error', () => undefined); // The proxy stops reading at 1 MiB: the rest of the write may fail.
      socket.write(`GET /headers HTTP/1.1\r\nHost: docker\r\nX-Registry-Auth: ${'A'.repeat(1100 * 1024)}\r\n\r\n`);
      await within(new Promise((r) => socket.on('close', r)), 5000, 'the refusal of a head over 1 MiB');
      assert.match(got, /^HTTP\/1\.1 431 /);
      assert.match(got, /"message":"cove: the request's head is over 1 MiB"/);
    });

    test('a chunked answer streams: its head and first part arrive before dockerd sends the rest', async () => {
      const parts: string[] = [];
      const done = new Promise<string>((resolve, reject) => {
        const req = http.request({ socketPath: f.proxyPath, path: '/stream', agent: false }, (res) => {
          assert.equal(res.headers['transfer-encoding'], 'chunked');
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            parts.push(d);
            if (parts.length === 1) f.release();
          });
          res.on('end', () => resolve(parts.join('')));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(await within(done, 5000, 'the streamed answer'), '{"first":1}\n{"second":2}\n');
      assert.equal(parts[0], '{"first":1}\n', 'the first part came on its own');

      // A head with no body yet (as /containers/{id}/wait) reaches the client at once.
      const head = await within(
        new Promise<http.IncomingMessage>((resolve, reject) => {
          const req = http.request({ socketPath: f.proxyPath, method: 'POST', path: '/wait', agent: false }, resolve);
          req.on('error', reject);
          req.end();
        }),
        5000,
        "the wait answer's head before its body",
      );
      assert.equal(head.statusCode, 200);
      let body = '';
      head.on('data', (d: Buffer) => (body += d.toString()));
      f.release();
      await within(new Promise((r) => head.on('end', r)), 5000, "the wait answer's body");
      assert.equal(body, '{"StatusCode":0}\n');
    });

    test('a 50 MiB upload streams through (as docker load sends it: chunked)', async () => {
      const total = 50 * 1024 * 1024;
      const chunk = Buffer.alloc(1024 * 1024);
      const hash = createHash('sha256');
      const answer = await within(
        new Promise<{ bytes: number; sha256: string; firstAt: number; sentAt: number }>((resolve, reject) => {
          let sentAt = 0;
          const req = http.request({ socketPath: f.proxyPath, method: 'POST', path: '/upload', agent: false, headers: { 'Content-Type': 'application/x-tar' } }, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ ...(JSON.parse(body) as { bytes: number; sha256: string; firstAt: number }), sentAt }));
          });
          req.on('error', reject);
          let sent = 0;
          const pump = () => {
            while (sent < total) {
              chunk.fill(sent / chunk.length);
              hash.update(chunk);
              sent += chunk.length;
              if (!req.write(Buffer.from(chunk))) {
                req.once('drain', pump);
                return;
              }
            }
            sentAt = Date.now();
            req.end();
          };
          pump();
        }),
        60_000,
        'the 50 MiB upload',
      );
      assert.equal(answer.bytes, total);
      assert.equal(answer.sha256, hash.digest('hex'));
      assert.ok(answer.firstAt < answer.sentAt, 'dockerd had the first bytes before the client had sent the last (not buffered)');
    });

    test('a hijacked stream (exec start with its JSON body) carries the client EOF, then the answer and the guest EOF', async () => {
      const body = '{"Detach":false,"Tty":false}';
      const h = hijack(
        f,
        `POST /v1.45/exec/abc/start HTTP/1.1\r\nHost: api.moby.localhost\r\nContent-Length: ${body.length}\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n${body}`,
      );
      h.socket.write('hello ');
      h.socket.end('world'); // stdin EOF, as `docker exec -i` sends it
      const got = await within(h.read, 5000, 'the echo after the client half-closed');
      assert.match(got, /^HTTP\/1\.1 101 UPGRADED\r\n/);
      assert.ok(got.endsWith('\r\n\r\necho:hello world'), JSON.stringify(got));
      assert.equal(f.log.hijackBodies.at(-1), body, 'dockerd got the request body');
      await within(new Promise((r) => h.socket.on('close', r)), 5000, 'the hijacked connection closing');
    });

    test('a hijacked stream carries the guest EOF first, and the client may still send', async () => {
      const h = hijack(f, 'POST /containers/abc/attach?stream=1&stdin=1&guest-ends-first=1 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n');
      await within(h.ended, 5000, "the guest's EOF");
      const lateBefore = f.log.lateStdin.length;
      h.socket.end('still here');
      await waitFor('dockerd to get what the client sent after the guest EOF', 5000, () => f.log.lateStdin.length > lateBefore);
      assert.equal(f.log.lateStdin.at(-1), 'still here');
      assert.match(await h.read, /\r\n\r\nbye\n$/);
    });

    test('Binds: a source that is not shared is refused with the share command, and dockerd never sees it', async () => {
      const creates = f.log.creates.length;
      const a = await create(f, { Image: 'busybox', HostConfig: { Binds: ['/etc/ssl:/x:ro'] } });
      assert.equal(a.status, 400);
      assert.equal(a.headers['content-type'], 'application/json');
      assert.equal(messageOf(a), refusal('/etc/ssl'));
      assert.equal(f.log.creates.length, creates);
    });

    test('Mounts: a bind source that is not shared is refused (no version prefix)', async () => {
      const a = await create(f, { Image: 'busybox', HostConfig: { Mounts: [{ Type: 'volume', Source: 'v', Target: '/v' }, { Type: 'bind', Source: '/etc', Target: '/x' }] } }, '/containers/create');
      assert.equal(a.status, 400);
      assert.equal(messageOf(a), refusal('/etc'));
    });

    test('.. in a source is resolved before the check: /work/ws/../../etc is /etc', async () => {
      const a = await create(f, { HostConfig: { Binds: ['/work/ws/../../etc:/x'] } });
      assert.equal(a.status, 400);
      assert.equal(messageOf(a), refusal('/etc'));
      const b = await create(f, { HostConfig: { Mounts: [{ Type: 'bind', Source: '/work/ws/sub/../../wsx', Target: '/x' }] } });
      assert.equal(messageOf(b), refusal('/work/wsx'), 'a sibling that shares a prefix is not inside');
    });

    test('keys match without regard to case, as dockerd reads them', async () => {
      const a = await create(f, { hostconfig: { binds: ['/root/.ssh:/k'] } });
      assert.equal(a.status, 400);
      assert.equal(messageOf(a), refusal('/root/.ssh'));
    });

    test('volumes, shared paths and the guest paths meant to be bound pass unchanged', async () => {
      const config = {
        Image: 'busybox',
        HostConfig: {
          Binds: ['data:/data', '/work/ws:/work/ws', '/work/ws/sub/:/s:ro', '/data/extra/f:/f', '/var/run/docker.sock:/var/run/docker.sock', '/proc:/host/proc:ro', '/sys/fs/cgroup:/cg', '/dev/fuse:/dev/fuse', '/lib/modules:/lib/modules:ro', '/anon'],
          Mounts: [
            { Type: 'bind', Source: '/work/ws', Target: '/w' },
            { Type: 'volume', Source: '/etc', Target: '/v' },
            { Type: 'tmpfs', Target: '/t' },
            { Type: 'bind', Source: '/var/lib/docker/volumes', Target: '/vols' },
          ],
        },
      };
      const text = JSON.stringify(config, null, 1);
      const a = await call(f, 'POST', '/v1.45/containers/create', { body: text, headers: { 'Content-Type': 'application/json' } });
      assert.equal(a.status, 201, a.body);
      assert.equal(f.log.creates.at(-1)?.body, text, 'the body reached dockerd byte for byte');
    });

    test('a chunked create body is read whole and passed on with its length', async () => {
      const text = JSON.stringify({ Image: 'busybox', HostConfig: { Binds: ['/work/ws:/w'] } });
      const a = await call(f, 'POST', '/v1.45/containers/create?name=c', { body: text, chunked: true, headers: { 'Content-Type': 'application/json' } });
      assert.equal(a.status, 201, a.body);
      const seen = f.log.creates.at(-1);
      assert.equal(seen?.body, text);
      const names = (seen?.rawHeaders ?? []).filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      assert.ok(!names.includes('transfer-encoding'), names.join(', '));
      assert.ok(names.includes('content-length'), names.join(', '));
    });

    test('a body that is not JSON reaches dockerd unchanged', async () => {
      const a = await call(f, 'POST', '/containers/create', { body: '{"HostConfig": {"Binds": ["/etc:/x"]', headers: { 'Content-Type': 'application/json' } });
      assert.equal(a.status, 201);
      assert.equal(f.log.creates.at(-1)?.body, '{"HostConfig": {"Binds": ["/etc:/x"]');
    });

    test('a create body over 8 MiB is refused with a message', async () => {
      const creates = f.log.creates.length;
      const big = JSON.stringify({ Image: 'busybox', Labels: { pad: 'x'.repeat(MAX_CREATE_BODY_BYTES) } });
      for (const chunked of [false, true]) {
        const a = await call(f, 'POST', '/v1.45/containers/create', { body: big, chunked, headers: { 'Content-Type': 'application/json' } });
        assert.equal(a.status, 413);
        assert.equal(
          messageOf(a),
          "cove: the container's create request is over 8 MiB, more than the bind guard of sandbox x reads; or let containers bind any guest path: cove up /work/ws --name x --mount /host/extra:/data/extra --bind-guard=off",
        );
      }
      assert.equal(f.log.creates.length, creates);
    });

    test('with the guard off, any source passes', async () => {
      f.setPolicy(null);
      try {
        const a = await create(f, { HostConfig: { Binds: ['/etc/ssl:/x'] } });
        assert.equal(a.status, 201);
      } finally {
        f.setPolicy(POLICY);
      }
    });

    test('a guest that cannot be reached: a 503 the docker CLI shows, for requests and hijacks', async () => {
      f.setUp(false);
      try {
        const a = await call(f, 'GET', '/_ping');
        assert.equal(a.status, 503);
        assert.equal(messageOf(a), 'cove: sandbox x is stopped; start it with `cove start x`');
        const h = hijack(f, 'POST /containers/abc/attach HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n');
        h.socket.end();
        assert.match(await within(h.read, 5000, 'the 503 to a hijack'), /^HTTP\/1\.1 503[^]*sandbox x is stopped/);
      } finally {
        f.setUp(true);
      }
      assert.equal((await call(f, 'GET', '/_ping')).body, 'OK', 'served again once the guest is back');
    });
  });
}

describe('the Docker socket proxy against a broken or hostile dockerd', () => {
  test('an answer that is not HTTP, or with a head over 1 MiB: the client gets a 502 with a message, and the next connection works', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-dproxy-'));
    let mode: 'garbage' | 'huge head' | 'ok' = 'garbage';
    const guest = net.createServer((c) => {
      c.on('error', () => undefined);
      c.once('data', () => {
        if (mode === 'garbage') c.end('SSH-2.0-not-http\r\n\r\n');
        else if (mode === 'huge head') c.end(`HTTP/1.1 200 OK\r\nX-Flood: ${'x'.repeat(2 * 1024 * 1024)}\r\nContent-Length: 2\r\n\r\nOK`);
        else c.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK');
      });
    });
    await new Promise<void>((r) => guest.listen(path.join(dir, 'guest.sock'), () => r()));
    const proxy = await startDockerProxy({
      path: path.join(dir, 'docker.sock'),
      open: () => Promise.resolve(net.connect({ path: path.join(dir, 'guest.sock'), allowHalfOpen: true })),
      unavailable: (err) => err.message,
      policy: () => null,
      log: () => undefined,
    });
    try {
      const f = { proxyPath: path.join(dir, 'docker.sock') } as Fixture;
      const a = await within(call(f, 'GET', '/_ping'), 5000, 'the answer to a broken dockerd');
      assert.equal(a.status, 502);
      assert.match(messageOf(a), /^cove: the connection to dockerd broke: /);
      mode = 'huge head';
      const b = await within(call(f, 'GET', '/_ping'), 5000, 'the answer to a head over 1 MiB');
      assert.equal(b.status, 502);
      assert.match(messageOf(b), /^cove: the connection to dockerd broke: .*(Header overflow|HPE_HEADER_OVERFLOW)/i);
      mode = 'ok';
      assert.equal((await within(call(f, 'GET', '/_ping'), 5000, 'the next request')).body, 'OK');
    } finally {
      await new Promise<void>((r) => proxy.close(() => r()));
      guest.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("an idle keep-alive connection outlives Node's 5 s default, as dockerd keeps it", { timeout: 30_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-dproxy-'));
    const log: GuestLog = { connections: 0, open: 0, creates: [], hijackBodies: [], lateStdin: [] };
    const guest = fakeDockerd(log, { wait: Promise.resolve() });
    await new Promise<void>((r) => guest.listen(path.join(dir, 'guest.sock'), () => r()));
    guest.keepAliveTimeout = 0;
    const proxy = await startDockerProxy({
      path: path.join(dir, 'docker.sock'),
      open: () => Promise.resolve(net.connect({ path: path.join(dir, 'guest.sock'), allowHalfOpen: true })),
      unavailable: (err) => err.message,
      policy: () => null,
      log: () => undefined,
    });
    let clientConnections = 0;
    proxy.on('connection', () => clientConnections++);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const f = { proxyPath: path.join(dir, 'docker.sock') } as Fixture;
      assert.equal((await call(f, 'GET', '/_ping', { agent })).body, 'OK');
      await new Promise((r) => setTimeout(r, 6500));
      assert.equal((await call(f, 'GET', '/_ping', { agent })).body, 'OK');
      assert.equal(clientConnections, 1, 'the second request went on the same client connection');
      assert.equal(log.connections, 1, 'and on the same guest channel');
    } finally {
      agent.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
      guest.closeAllConnections();
      guest.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the proxy's cost", () => {
  test('a chunked upload reaches a channel without writev (as an SSH channel is) in about as many writes as it came in', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-dproxy-'));
    const guest = http.createServer((req, res) => {
      let n = 0;
      req.on('data', (d: Buffer) => (n += d.length));
      req.on('end', () => res.end(String(n)));
    });
    await new Promise<void>((r) => guest.listen(path.join(dir, 'guest.sock'), () => r()));
    let writes = 0;
    // Each write an SSH channel gets is at least one SSH packet for the guest's agent to take.
    const open = () =>
      new Promise<Duplex>((resolve) => {
        const s = net.connect({ path: path.join(dir, 'guest.sock'), allowHalfOpen: true });
        s.once('connect', () => {
          const ch = new Duplex({
            allowHalfOpen: true,
            write(chunk: Buffer, _enc, cb) {
              writes++;
              s.write(chunk);
              cb();
            },
            final(cb) {
              s.end();
              cb();
            },
            read() {
              s.resume();
            },
          });
          s.on('data', (d: Buffer) => {
            if (!ch.push(d)) s.pause();
          });
          s.on('end', () => ch.push(null));
          s.on('close', () => ch.destroy());
          resolve(ch);
        });
      });
    const proxy = await startDockerProxy({ path: path.join(dir, 'docker.sock'), open, unavailable: (err) => err.message, policy: () => null, log: () => undefined });
    try {
      const pieces = 640; // 20 MiB in 32 KiB pieces, as Go's client sends a `docker load`
      const got = await within(
        new Promise<string>((resolve, reject) => {
          const req = http.request({ socketPath: path.join(dir, 'docker.sock'), method: 'POST', path: '/images/load', agent: false }, (res) => {
            let b = '';
            res.on('data', (d: Buffer) => (b += d.toString()));
            res.on('end', () => resolve(b));
          });
          req.on('error', reject);
          const piece = Buffer.alloc(32 * 1024, 7);
          let i = 0;
          const pump = () => {
            while (i < pieces) {
              i++;
              if (!req.write(piece)) {
                req.once('drain', pump);
                return;
              }
            }
            req.end();
          };
          pump();
        }),
        30_000,
        'the upload',
      );
      assert.equal(got, String(pieces * 32 * 1024));
      // Without joining, Node's four writes per chunk made it about 4 × 640 + the head.
      assert.ok(writes < 2 * pieces, `${writes} channel writes for ${pieces} pieces`);
      process.stdout.write(`# ${writes} channel writes for ${pieces} pieces\n`);
    } finally {
      await new Promise<void>((r) => proxy.close(() => r()));
      guest.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
