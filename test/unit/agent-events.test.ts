// The cove-events stream of the real agent, every line checked against
// contract/events.schema.json (with ajv): hello first, then ready/dockerd as a fake dockerd comes and goes,
// port added/removed as this test listens on 0.0.0.0, and shutdown on SIGTERM.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as net from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Client, ClientChannel } from 'ssh2';
import { EVENTS_SUBSYSTEM, type AgentEvent } from '../../contract/events';
import { agentEventProblems } from '../../contract/events-check';
import schema from '../../contract/events.schema.json';
import { connect, fakeDockerd, LineReader, startAgent, within, type RunningAgent } from './agent-harness';

/** Every event type, checked by the compiler against the AgentEvent union. */
const EVENT_TYPES: Record<AgentEvent['type'], true> = { hello: true, ready: true, dockerd: true, port: true, shutdown: true };

describe('agent event stream', () => {
  let agent: RunningAgent;
  let client: Client;
  let events: LineReader;
  let dockerd: http.Server | undefined;

  before(async () => {
    agent = await startAgent();
    client = await connect(agent);
    const stream = await within(
      new Promise<ClientChannel>((resolve, reject) => client.subsys(EVENTS_SUBSYSTEM, (err, s) => (err ? reject(err) : resolve(s)))),
      10_000,
      `opening the ${EVENTS_SUBSYSTEM} subsystem`,
    );
    events = new LineReader(stream);
  });
  after(async () => {
    client?.end();
    dockerd?.close();
    if (agent && agent.child.exitCode === null) await agent.stop();
  });

  test('the schema names exactly the event types of events.ts', () => {
    const defs = schema.$defs as Record<string, { properties?: { type?: { const?: string } } }>;
    const inSchema = Object.values(defs)
      .map((d) => d.properties?.type?.const)
      .filter((t): t is string => typeof t === 'string')
      .sort();
    assert.deepEqual(inSchema, Object.keys(EVENT_TYPES).sort());
  });

  test('the schema check rejects what the schema forbids', () => {
    assert.deepEqual(agentEventProblems({ type: 'ready', bootSeconds: 1.5 }), []);
    assert.notDeepEqual(agentEventProblems({ type: 'ready' }), []);
    assert.notDeepEqual(agentEventProblems({ type: 'ready', bootSeconds: 1.5, extra: true }), []);
    assert.notDeepEqual(agentEventProblems({ type: 'dockerd', state: 'exploded' }), []);
    assert.notDeepEqual(agentEventProblems({ type: 'unknown' }), []);
  });

  test('hello comes first, with the current snapshot', async () => {
    const first = await events.next(() => true, 10_000, 'the hello event');
    assert.equal(first.type, 'hello');
    assert.deepEqual(agentEventProblems(first), []);
    assert.equal(first.dockerd, 'starting');
  });

  test('ready and dockerd follow the fake dockerd', async () => {
    const from = events.all.length;
    dockerd = await fakeDockerd(agent.dockerSock);
    await events.next((e) => e.type === 'dockerd' && e.state === 'running', 10_000, 'dockerd running', from);
    const ready = await events.next((e) => e.type === 'ready', 10_000, 'the ready event', from);
    assert.ok((ready.bootSeconds as number) > 0);
    assert.ok(fs.existsSync(agent.readyMarker), 'the ready marker is written');
    const stoppedFrom = events.all.length;
    await new Promise<void>((resolve) => dockerd!.close(() => resolve()));
    dockerd = undefined;
    await events.next((e) => e.type === 'dockerd' && e.state === 'stopped', 10_000, 'dockerd stopped', stoppedFrom);
  });

  test("a listener on 0.0.0.0 is reported added, then removed; a user's loopback listener too", async () => {
    const loop = net.createServer();
    await new Promise<void>((resolve) => loop.listen(0, '127.0.0.1', resolve));
    const loopPort = (loop.address() as net.AddressInfo).port;
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const from = events.all.length;
    const added = await events.next((e) => e.type === 'port' && e.action === 'added' && e.port === port, 10_000, `port ${port} added`, from);
    assert.equal(added.address, '0.0.0.0');
    assert.equal(added.proto, 'tcp');
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await events.next((e) => e.type === 'port' && e.action === 'removed' && e.port === port, 10_000, `port ${port} removed`, from);
    // This process is a user's service as far as the agent can tell (not the agent, containerd or
    // dockerd): its 127.0.0.1 listener is reported, as `-p 127.0.0.1:P:P` in the guest must be.
    const loopAdded = await events.next((e) => e.type === 'port' && e.action === 'added' && e.port === loopPort, 10_000, `loopback port ${loopPort} added`);
    assert.equal(loopAdded.address, '127.0.0.1');
    loop.close();
    await events.next((e) => e.type === 'port' && e.action === 'removed' && e.port === loopPort, 10_000, `loopback port ${loopPort} removed`, from);
  });

  test('a port on :: and 0.0.0.0 at once is one port', async () => {
    const v6 = net.createServer();
    await new Promise<void>((resolve) => v6.listen({ port: 0, host: '::', ipv6Only: true }, resolve));
    const port = (v6.address() as net.AddressInfo).port;
    const v4 = net.createServer();
    await new Promise<void>((resolve, reject) => v4.once('error', reject).listen(port, '0.0.0.0', resolve));
    const from = events.all.length;
    await events.next((e) => e.type === 'port' && e.action === 'added' && e.port === port, 10_000, `port ${port} added`, from);
    await new Promise((resolve) => setTimeout(resolve, 600)); // Three polls.
    assert.equal(events.all.slice(from).filter((e) => (e as { port?: number }).port === port).length, 1);
    v4.close();
    v6.close();
  });

  test('SIGTERM sends shutdown, then the agent exits 0', async () => {
    const from = events.all.length;
    agent.child.kill('SIGTERM');
    const shutdown = await events.next((e) => e.type === 'shutdown', 10_000, 'the shutdown event', from);
    assert.match(shutdown.reason as string, /SIGTERM/);
    const code = await agent.stop();
    assert.equal(code, 0);
  });

  test('every event received is valid against events.schema.json', () => {
    assert.ok(events.all.length >= 6, `got ${events.all.length} events`);
    for (const event of events.all) assert.deepEqual(agentEventProblems(event), [], JSON.stringify(event));
  });
});
