// The port transport (the virtio-serial channel), simulated with a FIFO pair: a FIFO read with no
// writer returns EOF, like the port with no host connected. A host that disappears without a word
// (coved killed) ends its SSH connection; the next host gets a fresh session on the same port, and
// stale bytes ahead of it are skipped with skipToBanner().
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { connect, exec, openAgentPort, startAgent, waitFor, type RunningAgent } from './agent-harness';

describe('agent port transport', () => {
  let agent: RunningAgent;

  before(async () => {
    agent = await startAgent({ port: true });
  });
  after(async () => {
    await agent?.stop();
  });

  const openHost = () => openAgentPort(agent);

  /** Reads and drops whatever waits in the out FIFO (what qemu discards while no host is there). */
  const drainOut = (): number => {
    const fd = fs.openSync(agent.portOut, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    let total = 0;
    try {
      const buf = Buffer.alloc(65536);
      for (;;) {
        try {
          const n = fs.readSync(fd, buf);
          if (n <= 0) break;
          total += n;
        } catch {
          break; // EAGAIN: empty.
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    return total;
  };

  test('serves SSH, survives a vanished host, and serves the next one', async () => {
    try {
      await reconnects();
    } catch (err) {
      throw new Error(`${(err as Error).message}\nagent log:\n${agent.log()}`, { cause: err });
    }
  });

  async function reconnects(): Promise<void> {
    const host1 = await openHost();
    const client1 = await connect(agent, { sock: host1 });
    assert.equal((await exec(client1, 'echo one')).stdout, 'one\n');
    const closed1 = new Promise<void>((resolve) => client1.once('close', () => resolve()));
    // The host vanishes mid-session: no SSH disconnect, its ends of the port just close.
    client1.exec('while :; do echo streaming; sleep 0.01; done', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 200));
    host1.destroy();
    await closed1;
    await waitFor(() => /port#1 ended \(host disconnected\)/.test(agent.log()), 10_000, 'the agent to end the first port session');
    drainOut();

    // A write that was blocked when the host left reaches the next host first.
    const stale = crypto.randomBytes(5000);
    const w = fs.openSync(agent.portOut, fs.constants.O_RDWR);
    fs.writeSync(w, stale);
    fs.closeSync(w);

    const host2 = await openHost();
    const client2 = await connect(agent, { sock: host2 });
    assert.equal((await exec(client2, 'echo two')).stdout, 'two\n');
    assert.match(agent.log(), /port#2/);
    client2.end();
    await waitFor(() => /port#2: connection closed/.test(agent.log()), 10_000, 'the second session to close');
    host2.destroy();

    // A clean disconnect works the same way.
    drainOut();
    const host3 = await openHost();
    const client3 = await connect(agent, { sock: host3 });
    assert.equal((await exec(client3, 'echo three')).stdout, 'three\n');
    // The next host connects before the previous one is gone: no read ever sees an EOF between
    // them (qemu accepts a queued connection the moment the previous one closes). The new host's
    // version line must start a fresh session anyway.
    const host4 = await openHost();
    host3.destroy();
    client3.end();
    const client4 = await connect(agent, { sock: host4 });
    assert.equal((await exec(client4, 'echo four')).stdout, 'four\n');
    assert.match(agent.log(), /ended \(a new host connected\)/);
    client4.end();
    host4.destroy();
  }
});
