// The data channel on a real sandbox (agent/PROTOCOL.md, "The data channel"; docs/data-path.md):
// the Docker socket and forwarded ports cross HTTP/2 streams on the second virtio-serial port, and
// everything the SSH channels did still works over it — hijacked streams that end with stdin's EOF,
// a forwarded port (through the forwarding NIC when it listens on every address), the agent killed (the channel comes back by itself), and an agent that does not
// serve the channel (as an older image's would), where coved falls back to SSH channels; `cove exec`
// over exec streams, and over SSH when the channel is down.
import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GUEST_FORWARD_NIC } from '../../contract/guest';
import { qmpCommand } from '../../vmm-host/driver/qmp';
import { makeBusyboxImage } from '../helpers/busybox-image';
import { COVE_BIN, HOME, SCRATCH, cove, covedPid, docker, ok, resetTestHome, run, testEnv, waitUntil, workspace } from '../helpers/harness';

// The channel is on by default; a developer's COVE_DATA_CHANNEL=off must not turn this suite into a test of SSH.
process.env.COVE_DATA_CHANNEL = 'on';

const NAME = 'dc1';
const CTX = `cove-${NAME}`;
const VMDIR = path.join(HOME, 'vms', NAME);
let ws = '';
let imageTar = '';
let image = '';

const covedLog = () => fs.readFileSync(path.join(HOME, 'coved.log'), 'utf8');
const count = (text: string, what: string) => text.split(what).length - 1;
const UP = `[${NAME}] data channel up (HTTP/2)`;

/** Sends `data` to 127.0.0.1:port, half-closes, and resolves with everything the other end says before it closes. */
function sendAndHalfClose(port: number, data: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let text = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error('no answer within 60 s'));
    }, 60_000);
    c.on('data', (d: Buffer) => (text += d.toString()));
    c.on('end', () => {
      clearTimeout(timer);
      c.end();
      resolve(text);
    });
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.end(data);
  });
}

/** One GET /_ping on a new connection to the sandbox's docker.sock; resolves with the body. */
function ping(): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(path.join(VMDIR, 'docker.sock'));
    let text = '';
    c.on('data', (d: Buffer) => (text += d.toString()));
    c.on('end', () => resolve(text));
    c.on('error', reject);
    c.end('GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n');
  });
}

describe('the data channel on a real sandbox', { timeout: 60 * 60_000 }, () => {
  before(() => {
    resetTestHome();
    ws = workspace(NAME);
    imageTar = path.join(SCRATCH, 'busybox-dc.tar');
    image = makeBusyboxImage(imageTar);
  });

  after(async () => {
    await cove(['rm', '--force', NAME], 180_000).catch(() => undefined);
    const pid = covedPid();
    if (pid) process.kill(pid, 'SIGTERM');
  });

  test('cove up brings the data channel up and an image loads through it', { timeout: 25 * 60_000 }, async () => {
    ok(await cove(['up', ws, '--name', NAME], 20 * 60_000), 'cove up');
    await waitUntil('the data channel to come up', 60_000, async () => covedLog().includes(UP));
    ok(await docker(CTX, ['load', '-i', imageTar], 300_000), 'docker load');
    assert.match(await ping(), /200 OK[\s\S]*OK$/);
    const agentLog = ok(await cove(['exec', NAME, '--', 'cat', '/var/log/cove/cove-agent.log'], 120_000), 'read the agent log').stdout;
    assert.match(agentLog, /data: docker\.sock #\d+: the request comes on the stdin port/, 'the load (a chunked POST) took the stdin port');
  });

  test('Docker uploads take the stdin port byte for byte, and the data channel while something in the guest holds it', async () => {
    const agentLog = async () => ok(await cove(['exec', NAME, '--', 'cat', '/var/log/cove/cove-agent.log'], 120_000), 'read the agent log').stdout;
    const viaPort = (text: string) => count(text, 'the request comes on the stdin port');
    const file = path.join(SCRATCH, 'upload.bin');
    const bytes = crypto.randomBytes(6 * 1024 * 1024 + 321);
    fs.writeFileSync(file, bytes);
    const md5 = crypto.createHash('md5').update(bytes).digest('hex');
    await docker(CTX, ['rm', '-f', 'dcup'], 120_000);
    ok(await docker(CTX, ['run', '-d', '--name', 'dcup', image, 'sleep', '600'], 300_000), 'a container to copy into');
    try {
      const before = viaPort(await agentLog());
      ok(await docker(CTX, ['cp', file, 'dcup:/tmp/upload.bin'], 300_000), 'docker cp into the container');
      assert.equal(ok(await docker(CTX, ['exec', 'dcup', 'md5sum', '/tmp/upload.bin'], 120_000), 'md5sum in the container').stdout.split(' ')[0], md5);
      assert.equal(viaPort(await agentLog()), before + 1, 'the copy (a chunked PUT) took the stdin port');
      // A leftover process in the guest holds the port: the next upload takes the data channel.
      ok(await cove(['exec', NAME, '--', 'sh', '-c', 'exec 3<&0; sleep 600 >/dev/null 2>&1 & echo $! > /tmp/holder'], 120_000, ''), 'leave a holder');
      try {
        ok(await docker(CTX, ['cp', file, 'dcup:/tmp/again.bin'], 300_000), 'docker cp while the port is held');
        assert.equal(ok(await docker(CTX, ['exec', 'dcup', 'md5sum', '/tmp/again.bin'], 120_000), 'md5sum of the second copy').stdout.split(' ')[0], md5);
        const log = await agentLog();
        assert.equal(viaPort(log), before + 1, 'the second copy did not take the port');
        assert.match(log, /cannot open the stdin port \S+: EBUSY/);
      } finally {
        ok(await cove(['exec', NAME, '--', 'sh', '-c', 'kill $(cat /tmp/holder)'], 120_000), 'end the holder');
      }
    } finally {
      await docker(CTX, ['rm', '-f', 'dcup'], 120_000);
    }
  });

  test('cove exec without a terminal runs over exec streams: exit status, stdout and stderr apart, 4 MiB of stdin byte for byte', async () => {
    const r = await cove(['exec', NAME, '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], 120_000);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    // Letters, so the harness's text input is these bytes exactly.
    const input = Array.from({ length: 4 * 1024 * 1024 }, (_, i) => String.fromCharCode(97 + ((i * 7919) % 26))).join('');
    const sum = ok(await cove(['exec', NAME, '--', 'md5sum'], 300_000, input), 'cove exec md5sum');
    assert.equal(sum.stdout.split(' ')[0], crypto.createHash('md5').update(input).digest('hex'));
    // The agent ran them as exec streams (its SSH sessions log as <connection>/s<n>).
    const log = ok(await cove(['exec', NAME, '--', 'cat', '/var/log/cove/cove-agent.log'], 120_000), 'read the agent log');
    assert.match(log.stdout, /exec#\d+: exited 7/);
  });

  test('the stdin port: stdin byte for byte with no guest process copying it, EOF, a command that does not read, a port held by a leftover process, two commands at once', async () => {
    const agentLog = async () => ok(await cove(['exec', NAME, '--', 'cat', '/var/log/cove/cove-agent.log'], 120_000), 'read the agent log').stdout;
    const viaPort = (text: string) => count(text, '(stdin: the stdin port)');
    const before = viaPort(await agentLog());
    const input = Array.from({ length: 4 * 1024 * 1024 }, (_, i) => String.fromCharCode(65 + ((i * 31) % 26))).join('');
    const md5 = crypto.createHash('md5').update(input).digest('hex');
    assert.equal(ok(await cove(['exec', NAME, '--', 'md5sum'], 300_000, input), 'md5sum over the port').stdout.split(' ')[0], md5);
    assert.equal(ok(await cove(['exec', NAME, '--', 'wc', '-c'], 120_000, ''), 'empty stdin').stdout.trim(), '0');
    assert.equal(ok(await cove(['exec', NAME, '--', 'sh', '-c', 'cat; echo "<"'], 120_000, 'hello'), 'five bytes').stdout, 'hello<\n');
    // 16 MiB the command never reads: it ends anyway, and the port is free for the next one.
    ok(await cove(['exec', NAME, '--', 'true'], 120_000, 'x'.repeat(16 * 1024 * 1024)), 'true with unread stdin');
    assert.equal(ok(await cove(['exec', NAME, '--', 'md5sum'], 300_000, input), 'md5sum after it').stdout.split(' ')[0], md5);
    const log1 = await agentLog();
    assert.ok(viaPort(log1) - before >= 5, `each of the five commands took the port:\n${log1.slice(-2000)}`);
    // A leftover process that keeps the port open: the next command's stdin takes the data channel.
    ok(await cove(['exec', NAME, '--', 'sh', '-c', 'exec 3<&0; sleep 600 >/dev/null 2>&1 & echo $! > /tmp/holder'], 120_000, ''), 'leave a holder');
    assert.equal(ok(await cove(['exec', NAME, '--', 'md5sum'], 300_000, input), 'md5sum while the port is held').stdout.split(' ')[0], md5);
    assert.match(await agentLog(), /cannot open the stdin port \S+: EBUSY/);
    ok(await cove(['exec', NAME, '--', 'sh', '-c', 'kill $(cat /tmp/holder)'], 120_000), 'end the holder');
    // Two at once: one on the port, one on the data channel, neither's bytes in the other.
    const other = input.split('').reverse().join('');
    const [a, b] = await Promise.all([cove(['exec', NAME, '--', 'md5sum'], 300_000, input), cove(['exec', NAME, '--', 'md5sum'], 300_000, other)]);
    assert.equal(ok(a, 'first of two').stdout.split(' ')[0], md5);
    assert.equal(ok(b, 'second of two').stdout.split(' ')[0], crypto.createHash('md5').update(other).digest('hex'));
    const log2 = await agentLog();
    assert.ok(viaPort(log2) > viaPort(log1), `the port served commands again once its holder ended:\n${log2.slice(-2000)}`);
  });

  test("a reader of cove exec's output that goes away ends it with 141 (as SIGPIPE would), over exec streams and over SSH", async () => {
    for (const transport of ['', 'ssh']) {
      const line = `"${process.execPath}" "${COVE_BIN}" exec ${NAME} -- seq 1 1000000 | head -2; echo "rc=\${PIPESTATUS[0]}"`;
      const r = await run('bash', ['-c', line], { timeoutMs: 180_000, env: testEnv({ COVE_EXEC_TRANSPORT: transport }) });
      assert.equal(r.stdout, '1\n2\nrc=141\n', `over ${transport || 'exec streams'}: ${r.stderr}`);
    }
  });

  test('hijacked streams: docker run -i and docker exec -i see stdin EOF and finish', async () => {
    const input = 'line one\nline two\n';
    const r = ok(await docker(CTX, ['run', '--rm', '-i', image, 'sh', '-c', 'cat; echo END'], 180_000, input), 'docker run -i');
    assert.equal(r.stdout, `${input}END\n`);
    ok(await docker(CTX, ['run', '-d', '--name', 'idle', image, 'sleep', '3600'], 180_000), 'docker run -d');
    const e = ok(await docker(CTX, ['exec', '-i', 'idle', 'sh', '-c', 'wc -c; echo END'], 180_000, 'twelve bytes'), 'docker exec -i');
    assert.equal(e.stdout.replace(/\s+/g, ' ').trim(), '12 END');
  });

  test('a published port answers through the forwarding NIC, 8 MiB byte for byte, half-close kept; one on the guest loopback through the data channel; the hostfwd goes with the container', async () => {
    // The workspace is shared at the same path: httpd serves a file the host wrote.
    const big = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
    fs.mkdirSync(path.join(ws, 'www'), { recursive: true });
    fs.writeFileSync(path.join(ws, 'www', 'big'), big);
    fs.writeFileSync(path.join(ws, 'www', 'small'), 'on the loopback\n');
    const guestAddr = ok(await cove(['exec', NAME, '--', 'cat', '/run/cove/forward-address'], 60_000), 'read the forwarding address');
    assert.equal(guestAddr.stdout.trim(), GUEST_FORWARD_NIC.address, 'the init set the forwarding NIC up');
    ok(await docker(CTX, ['run', '-d', '--name', 'web', '-p', '8383:80', '-v', `${ws}/www:/www`, image, 'httpd', '-f', '-p', '80', '-h', '/www'], 180_000), 'docker run -p');
    ok(await docker(CTX, ['run', '-d', '--name', 'webLo', '-p', '127.0.0.1:8384:80', '-v', `${ws}/www:/www`, image, 'httpd', '-f', '-p', '80', '-h', '/www'], 180_000), 'docker run -p 127.0.0.1:…');
    ok(await docker(CTX, ['run', '-d', '--name', 'count', '-p', '8385:80', image, 'nc', '-ll', '-p', '80', '-e', 'wc', '-c'], 180_000), 'docker run -p (a byte counter)');
    const out = path.join(SCRATCH, 'big.out');
    await waitUntil('the forwarded port to serve the file', 180_000, async () => {
      const r = await run('curl', ['-sf', '--max-time', '120', '-o', out, 'http://127.0.0.1:8383/big'], { timeoutMs: 150_000 });
      return r.code === 0 && fs.statSync(out).size === big.length;
    }, 2000);
    assert.ok(fs.readFileSync(out).equals(big), 'the file came through unchanged');
    // Large segments (init-lib.sh cove_forward_segments): the NIC's MTU, and the guest sending the
    // next 8 MiB in segments far above slirp's 1,460-byte MSS. That needs all three settings: without
    // the conntrack exemption, Docker's DNAT hands the connection to the container, whose veth
    // (MTU 1500) cuts it into 1,448-byte segments again.
    const nicStats = async () => {
      const script = `n=$(grep -l ${GUEST_FORWARD_NIC.mac} /sys/class/net/*/address | cut -d/ -f5); cd /sys/class/net/$n && cat mtu statistics/tx_bytes statistics/tx_packets`;
      const [mtu, bytes, packets] = ok(await cove(['exec', NAME, '--', 'sh', '-c', script], 60_000), 'read the NIC counters').stdout.trim().split('\n').map(Number);
      return { mtu, bytes, packets };
    };
    const before = await nicStats();
    assert.equal(before.mtu, GUEST_FORWARD_NIC.mtu, "the forwarding NIC's MTU");
    ok(await run('curl', ['-sf', '--max-time', '120', '-o', out, 'http://127.0.0.1:8383/big'], { timeoutMs: 150_000 }), 'the second GET');
    assert.ok(fs.readFileSync(out).equals(big), 'the file came through unchanged again');
    const after = await nicStats();
    const perPacket = (after.bytes - before.bytes) / (after.packets - before.packets);
    assert.ok(after.bytes - before.bytes > big.length, `the GET left through the NIC: ${after.bytes - before.bytes} bytes`);
    assert.ok(perPacket > 8000, `the guest sent large segments: ${perPacket.toFixed(0)} bytes a packet (1,448 at slirp's MSS)`);
    let small = '';
    await waitUntil('the loopback-published port to answer', 180_000, async () => {
      const r = await run('curl', ['-sf', '--max-time', '60', 'http://127.0.0.1:8384/small'], { timeoutMs: 90_000 });
      small = r.stdout;
      return r.code === 0;
    }, 2000);
    assert.equal(small, 'on the loopback\n');
    // Half-close: the host sends 3 MB and its FIN; the container answers with the count after its EOF.
    let counted = '';
    await waitUntil('the byte counter to answer through the forwarded port', 180_000, async () => {
      counted = await sendAndHalfClose(8385, Buffer.alloc(3_000_000, 120)).catch(() => '');
      return counted !== '';
    }, 2000);
    assert.equal(counted.trim(), '3000000');
    const log = covedLog();
    assert.match(log, new RegExp(`\\[${NAME}\\] forwarding NIC: 127\\.0\\.0\\.1:\\d+ -> guest port 8383`));
    assert.match(log, new RegExp(`\\[${NAME}\\] forwarding NIC: 127\\.0\\.0\\.1:\\d+ -> guest port 8385`));
    assert.doesNotMatch(log, /forwarding NIC: 127\.0\.0\.1:\d+ -> guest port 8384/, 'a port on the guest loopback is not reachable on the NIC');
    const usernet = async () => String(await qmpCommand(path.join(VMDIR, 'qmp.sock'), 'human-monitor-command', { 'command-line': 'info usernet' }));
    assert.match(await usernet(), new RegExp(`HOST_FORWARD.*${GUEST_FORWARD_NIC.address.replace(/\./g, '\\.')}\\s+8383`));
    // webLo stays: the fallback case below reaches it through SSH channels.
    ok(await docker(CTX, ['rm', '-f', 'web', 'count'], 180_000), 'docker rm');
    await waitUntil("qemu's forward of 8383 to go with its container", 120_000, async () => !/\s8383\s/.test(await usernet()), 1000);
  });

  test('kill -9 of the agent: the data channel comes back by itself and docker works over it', async () => {
    const before = count(covedLog(), UP);
    await cove(['exec', NAME, '--', 'sh', '-c', 'kill -9 $(cat /run/cove/cove-agent.pid)'], 60_000);
    await waitUntil('the data channel to come back after the agent was killed', 120_000, async () => count(covedLog(), UP) > before, 1000);
    ok(await docker(CTX, ['ps'], 60_000), 'docker ps after the restart');
    const r = ok(await docker(CTX, ['run', '--rm', '-i', image, 'sh', '-c', 'cat; echo END'], 180_000, 'after\n'), 'docker run -i after the restart');
    assert.equal(r.stdout, 'after\nEND\n');
  });

  test('an agent that does not serve the data channel (an older image): coved falls back to SSH channels', async () => {
    // The agent's own switch (COVE_AGENT_DATA_PORT=none), set by a wrapper the init starts instead.
    const wrap = [
      'mv /opt/cove/agent.js /opt/cove/agent-real.js',
      `printf '%s\\n' "process.env.COVE_AGENT_DATA_PORT = 'none'; process.argv[1] = '/opt/cove/agent-real.js'; require('module').runMain();" > /opt/cove/agent.js`,
      'kill -9 $(cat /run/cove/cove-agent.pid)',
    ].join(' && ');
    await cove(['exec', NAME, '--', 'sh', '-c', wrap], 60_000);
    try {
      await waitUntil('coved to give up on the data channel', 120_000, async () => /data channel: the agent did not answer the data channel's hello/.test(covedLog()), 1000);
      assert.match(await ping(), /200 OK[\s\S]*OK$/);
      const r = ok(await docker(CTX, ['run', '--rm', '-i', image, 'sh', '-c', 'cat; echo END'], 180_000, 'over ssh\n'), 'docker run -i over SSH');
      assert.equal(r.stdout, 'over ssh\nEND\n');
      // A port on the guest's loopback: the agent carries it (a port on every address would take the forwarding NIC).
      const web = await run('curl', ['-sf', '--max-time', '60', '-o', '/dev/null', '-w', '%{size_download}', 'http://127.0.0.1:8384/big'], { timeoutMs: 90_000 });
      assert.equal(web.stdout, String(8 * 1024 * 1024), 'the forwarded port works over SSH');
      // cove exec: exec.sock answers "use SSH", and the command runs once, over SSH.
      const e = await cove(['exec', NAME, '--', 'sh', '-c', 'echo via-ssh; echo once >> /tmp/ran; exit 5'], 120_000);
      assert.equal(e.code, 5, e.stderr);
      assert.equal(e.stdout, 'via-ssh\n');
      assert.equal(ok(await cove(['exec', NAME, '--', 'cat', '/tmp/ran'], 120_000), 'cat /tmp/ran').stdout, 'once\n');
    } finally {
      const before = count(covedLog(), UP);
      await cove(['exec', NAME, '--', 'sh', '-c', 'mv /opt/cove/agent-real.js /opt/cove/agent.js && kill -9 $(cat /run/cove/cove-agent.pid)'], 60_000);
      // The link retries with back-off (up to a minute between tries while the agent stays silent).
      await waitUntil('the data channel to come back with the real agent', 180_000, async () => count(covedLog(), UP) > before, 1000);
    }
    assert.match(await ping(), /200 OK[\s\S]*OK$/);
  });
});
