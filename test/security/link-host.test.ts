// coved's agent link and port forwarder against a hostile agent, run on this host (no VM): the real
// AgentLink (vmm-host/coved/agent-link.ts) connects to an SSH server that floods it the way a guest
// root who replaced the agent could, and its events drive a real PortForwarder as sandbox.ts wires
// them. The same port storm runs against a real guest in guest.test.ts; docs/security.md lists both.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { after, describe, test } from 'node:test';
import { Server, utils, type Connection, type ServerChannel } from 'ssh2';
import type { AgentEvent, ListeningPort } from '../../contract/events';
import { AgentLink, EXEC_MAX_OUTPUT_BYTES, MAX_HOST_PORT_CONNECTIONS } from '../../vmm-host/coved/agent-link';
import { EVENT_LINE_BOUNDS } from '../../vmm-host/coved/bounded-lines';
import { DEFAULT_MAX_AUTO_PORTS, PortForwarder, hostListening, parsePortList, portPolicyFromEnv } from '../../vmm-host/coved/ports';
import { waitUntil } from '../helpers/wait';
import { listenUnix, newHostKey, tmpDir } from './helpers';

interface Hostile {
  /** What the event stream sends, once, when coved opens it. */
  events: (ch: ServerChannel) => void;
  /** Host ports to open forwarded-tcpip channels to, and how many, once coved asks for them. */
  channelFlood?: { port: number; count: number; otherPort?: number };
}

/** A hostile agent: any client key is accepted; exec floods its output; the rest is `h`. */
function hostileAgent(hostKey: string, h: Hostile): Server {
  return new Server({ hostKeys: [hostKey], ident: 'cove-agent_hostile' }, (conn: Connection) => {
    conn.on('authentication', (ctx) => ctx.accept());
    conn.on('error', () => undefined);
    conn.on('request', (accept, _reject, name, info) => {
      accept?.();
      if (name !== 'tcpip-forward' || !h.channelFlood) return;
      const { count, otherPort } = h.channelFlood;
      const port = (info as { bindPort: number }).bindPort;
      for (let i = 0; i < count; i++) {
        conn.forwardOut('127.0.0.1', port, '127.0.0.1', 10_000 + i, (err, ch) => {
          if (!err) ch.on('error', () => undefined);
        });
      }
      // And channels that claim a host port coved never asked for.
      for (let i = 0; i < 50 && otherPort !== undefined; i++) {
        conn.forwardOut('127.0.0.1', otherPort, '127.0.0.1', 20_000 + i, (err, ch) => {
          if (!err) ch.on('error', () => undefined);
        });
      }
    });
    conn.on('ready', () => {
      conn.on('session', (accept) => {
        const session = accept();
        session.on('subsystem', (acceptSub, _reject, info) => {
          const ch = acceptSub();
          ch.on('error', () => undefined);
          if (info.name === 'cove-events') h.events(ch);
        });
        session.on('exec', (acceptExec) => {
          const ch = acceptExec();
          ch.on('error', () => undefined);
          // 20 MiB of output for a command that coved expects to print a line.
          const chunk = Buffer.alloc(64 * 1024, 0x41);
          let sent = 0;
          const pump = () => {
            while (sent < 20 * 1024 * 1024) {
              sent += chunk.length;
              if (!ch.write(chunk)) return void ch.once('drain', pump);
            }
            ch.exit(0);
            ch.end();
          };
          pump();
        });
      });
    });
  });
}

interface Running {
  server: Server;
  link: AgentLink;
  logs: string[];
  events: AgentEvent[];
  dir: string;
}

async function connect(h: Hostile, allowHostPorts: number[] = []): Promise<Running> {
  const dir = tmpDir('cove-sec-link-');
  const hostKey = newHostKey();
  const server = hostileAgent(hostKey, h);
  const sock = await listenUnix(server, dir);
  const logs: string[] = [];
  const events: AgentEvent[] = [];
  const link = new AgentLink({
    agentSock: sock,
    hostKey: utils.parseKey(hostKey) instanceof Error ? '' : hostKey,
    clientKey: newHostKey(),
    log: (m) => logs.push(m),
    allowHostPorts,
    handshakeTimeoutMs: 10_000,
    firstHandshakeTimeoutMs: 10_000,
  });
  link.on('event', (ev: AgentEvent) => events.push(ev));
  link.start();
  try {
    await link.waitUp(15_000, 'the hostile agent');
  } catch (e) {
    // A link left running would keep reconnecting, and this process alive, after the tests end.
    link.close();
    server.close();
    throw e;
  }
  return { server, link, logs, events, dir };
}

function stop(r: Running): void {
  r.link.close();
  r.server.close();
  fs.rmSync(r.dir, { recursive: true, force: true });
}

/** Measures the longest event-loop stall while `ms` pass. */
async function maxLag(ms: number): Promise<number> {
  let worst = 0;
  let last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    worst = Math.max(worst, now - last - 20);
    last = now;
  }, 20);
  await new Promise((r) => setTimeout(r, ms));
  clearInterval(timer);
  return worst;
}

/** Every TCP port something on this host listens on, read once from /proc/net/tcp and tcp6. */
function listeningPorts(): Set<number> {
  const out = new Set<number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of fs.readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f.length > 3 && f[3] === '0A') out.add(parseInt(f[1].split(':')[1], 16));
    }
  }
  return out;
}

const line = (o: unknown) => JSON.stringify(o) + '\n';
const hello = (ports: ListeningPort[]) => line({ type: 'hello', agentVersion: 'hostile', kernel: 'x', uptime: 1, dockerd: 'running', ports });

describe('a hostile agent against coved', { timeout: 180_000 }, () => {
  const running: Running[] = [];
  after(() => running.forEach(stop));

  test('an oversized event line and a flood of junk are dropped; coved keeps its memory and answers', async () => {
    const r = await connect({
      events: (ch) => {
        // 64 MiB without a newline, then 2,000 lines that are not JSON, then one good event.
        const big = Buffer.alloc(1024 * 1024, 0x7b);
        let i = 0;
        const pump = () => {
          while (i < 64) {
            i++;
            if (!ch.write(big)) return void ch.once('drain', pump);
          }
          ch.write('\n' + 'junk\n'.repeat(2000) + line({ type: 'dockerd', state: 'stopped' }));
        };
        pump();
      },
    });
    running.push(r);
    const rss0 = process.memoryUsage().rss;
    const lag = await maxLag(3000);
    assert.ok(lag < 1000, `the event loop stalled ${lag} ms`);
    assert.ok(process.memoryUsage().rss - rss0 < 48 * 1024 * 1024, `coved grew by ${Math.round((process.memoryUsage().rss - rss0) / 1048576)} MiB while fed 64 MiB on one line`);
    await waitUntil('the good event after the junk', 120_000, async () => r.events.some((e) => e.type === 'dockerd'), 200);
    assert.ok(r.logs.some((l) => l.includes(`a line longer than ${EVENT_LINE_BOUNDS.maxLineBytes} bytes was dropped`)), r.logs.join('\n'));
    const junkLogs = r.logs.filter((l) => l.includes('not JSON'));
    assert.ok(junkLogs.length <= 20, `${junkLogs.length} log lines for the junk: the log is rate-limited`);
    stop(r);
    running.pop();
  });

  test('an event storm is taken at a bounded rate, with nothing lost', async () => {
    const N = 9000;
    const r = await connect({ events: (ch) => ch.write(line({ type: 'dockerd', state: 'running' }).repeat(N)) });
    running.push(r);
    await new Promise((res) => setTimeout(res, 1000));
    const afterOne = r.events.length;
    const ceiling = EVENT_LINE_BOUNDS.burst + EVENT_LINE_BOUNDS.perSecond * 2;
    assert.ok(afterOne <= ceiling, `${afterOne} events within about a second, more than ${ceiling}`);
    await waitUntil(`all ${N} events`, 60_000, async () => r.events.length === N, 200);
    stop(r);
    running.pop();
  });

  test('10,000 announced ports: at most the cap is forwarded; ports in use on the host and on the never-forward list are not', async () => {
    // Something on the host listens on [::1]:P only and on 127.0.0.1:Q; a deny-listed port R.
    const base = 40_000 + Math.floor(Math.random() * 10_000);
    const ports = Array.from({ length: 10_000 }, (_, i) => ((base + i - 1025) % 64_000) + 1025);
    const [P, Q, R] = ports;
    const v6 = net.createServer().listen({ host: '::1', port: P, ipv6Only: true });
    const v4 = net.createServer((c) => c.end('the host service\n')).listen({ host: '127.0.0.1', port: Q });
    await Promise.all([v6, v4].map((s) => new Promise((res) => (s.listening ? res(null) : s.once('listening', res)))));
    const r = await connect({ events: (ch) => ch.write(hello(ports.map((port) => ({ proto: 'tcp', address: '0.0.0.0', port })))) });
    running.push(r);
    const changes: string[] = [];
    const fwd = new PortForwarder(
      { forwardTcp: () => Promise.reject(new Error('not used')) },
      (p, action) => changes.push(`${action} ${p.hostPort}`),
      (m) => r.logs.push(m),
      { maxAuto: DEFAULT_MAX_AUTO_PORTS, neverForward: new Set([R]) },
    );
    try {
      await waitUntil('the hello with 10,000 ports', 30_000, async () => r.events.length > 0, 100);
      const first = r.events[0];
      assert.equal(first.type, 'hello');
      if (first.type === 'hello') fwd.syncAuto(first.ports);
      await waitUntil('the forwards to settle', 30_000, async () => fwd.list().filter((f) => f.error === undefined).length >= DEFAULT_MAX_AUTO_PORTS - 2, 100);
      await new Promise((res) => setTimeout(res, 500));
      const bound = fwd.list().filter((f) => f.error === undefined).map((f) => f.hostPort);
      assert.ok(bound.length <= DEFAULT_MAX_AUTO_PORTS, `${bound.length} forwards, over the cap of ${DEFAULT_MAX_AUTO_PORTS}`);
      const all = listeningPorts();
      const listening = ports.filter((p) => p !== P && p !== Q && all.has(p));
      assert.ok(listening.length <= DEFAULT_MAX_AUTO_PORTS, `${listening.length} host listeners in the announced range`);
      assert.ok(!bound.includes(P) && !bound.includes(Q) && !bound.includes(R), 'no forward of a port in use or deny-listed');
      assert.ok(changes.includes(`failed ${P}`) && changes.includes(`failed ${Q}`), 'each port in use is reported');
      assert.equal(r.logs.filter((l) => l.includes('ports; port')).length, 1, 'the cap is reported once');
      assert.ok(r.logs.some((l) => l.includes(`port ${R}: not forwarded automatically (it is on the never-forward list`)));
      assert.equal(await new Promise<string>((res) => net.connect({ host: '127.0.0.1', port: Q }).on('data', (d) => res(d.toString()))), 'the host service\n');
      // A second hello (a reconnect) retries nothing that was refused and keeps the cap.
      const before = changes.length;
      fwd.syncAuto(ports.map((port) => ({ proto: 'tcp', address: '0.0.0.0', port })));
      await new Promise((res) => setTimeout(res, 500));
      assert.deepEqual(changes.slice(before), [], 'no new attempt, no new report');
      // Closing every forward (a sandbox that stops) leaves nothing bound: no waiting port takes a freed place.
      await fwd.closeAll();
      await new Promise((res) => setTimeout(res, 500));
      assert.deepEqual(fwd.list(), []);
      const left = listeningPorts();
      assert.deepEqual(ports.filter((p) => p !== P && p !== Q && left.has(p)), [], 'no listener left after closeAll');
    } finally {
      await fwd.closeAll();
      v6.close();
      v4.close();
      stop(r);
      running.pop();
    }
  });

  test("an exec's output is kept to 1 MiB however much the guest prints", async () => {
    const r = await connect({ events: () => undefined });
    running.push(r);
    const res = await r.link.exec('anything', 60_000);
    assert.equal(res.stdout.length, EXEC_MAX_OUTPUT_BYTES);
    stop(r);
    running.pop();
  });

  test('a flood of channel opens toward an allowed host port is held to the connection cap; other host ports are never reached', async () => {
    let open = 0;
    let most = 0;
    const held: net.Socket[] = [];
    const hostService = net.createServer((c) => {
      held.push(c);
      open++;
      most = Math.max(most, open);
      c.on('close', () => open--);
    });
    await new Promise<void>((res) => hostService.listen({ host: '127.0.0.1', port: 0 }, res));
    const port = (hostService.address() as net.AddressInfo).port;
    // A host service outside the allow list, which the guest must never reach.
    let otherConnections = 0;
    const other = net.createServer((c) => {
      otherConnections++;
      c.destroy();
    });
    await new Promise<void>((res) => other.listen({ host: '127.0.0.1', port: 0 }, res));
    const otherPort = (other.address() as net.AddressInfo).port;
    const r = await connect({ events: () => undefined, channelFlood: { port, count: 1000, otherPort } }, [port]);
    running.push(r);
    try {
      await waitUntil('the host service to fill up to the cap', 30_000, async () => most >= MAX_HOST_PORT_CONNECTIONS, 100);
      await new Promise((res) => setTimeout(res, 1000));
      assert.equal(most, MAX_HOST_PORT_CONNECTIONS, `${most} host connections at once`);
      assert.ok(r.logs.some((l) => l.includes('refusing more')));
      assert.equal(otherConnections, 0, 'no connection to a host port outside the allow list');
    } finally {
      held.forEach((c) => c.destroy());
      hostService.close();
      other.close();
      stop(r);
      running.pop();
    }
  });
});

describe('port policy settings', () => {
  test('COVE_NEVER_FORWARD and COVE_MAX_AUTO_PORTS are read, and a bad value is an error', () => {
    assert.deepEqual([...parsePortList('5432, 6379,8000-8002', 'X')], [5432, 6379, 8000, 8001, 8002]);
    assert.throws(() => parsePortList('5432,db', 'COVE_NEVER_FORWARD'), /COVE_NEVER_FORWARD: cannot read "db"/);
    assert.throws(() => portPolicyFromEnv({ COVE_MAX_AUTO_PORTS: '-1' }), /COVE_MAX_AUTO_PORTS must be a whole number/);
    assert.equal(portPolicyFromEnv({ COVE_MAX_AUTO_PORTS: '0' }).maxAuto, 0);
    assert.equal(portPolicyFromEnv({}).maxAuto, DEFAULT_MAX_AUTO_PORTS);
    assert.equal(hostListening(0), false);
  });
});
