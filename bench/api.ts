// Rows 2 and 3: the Docker API through the context against the same request made inside the guest
// (/_ping with the same node client on both sides; `docker ps` with 20 running containers with the
// docker CLI on both sides), and `docker load` of a 100 MiB image through the context against
// loading the same tarball inside the guest.
import { createHash, randomBytes } from 'node:crypto';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeBusyboxImage } from '../test/helpers/busybox-image';
import { BENCH_ROOT, GUEST_FILES, HOME, cove, docker, guestSh, log, makeRow, ok, sh, timeHost, timed } from './lib';
import type { Suite } from './suite';

export const BUSYBOX_TAG = 'cove-bench/busybox:latest';
const BIG_TAG = 'cove-bench/big:latest';
const BIG_MIB = 100;

/** Loads the busybox test image into the sandbox (once). */
export async function ensureBusybox(name: string): Promise<void> {
  const have = await docker(name, ['image', 'inspect', BUSYBOX_TAG], 60_000);
  if (have.code === 0) return;
  const tar = path.join(BENCH_ROOT, 'busybox.tar');
  if (!fs.existsSync(tar)) makeBusyboxImage(tar, BUSYBOX_TAG);
  ok(await docker(name, ['load', '-i', tar], 300_000), 'docker load busybox');
}

/** Runs the shared HTTP probe with the host's node; returns per-request ms. */
export async function hostProbe(url: string, count: number, socket?: string, keepAlive = false): Promise<{ ms: number[]; bytes: number }> {
  const args = [path.join(GUEST_FILES, 'probe.js'), url, `${count}`, ...(socket ? [socket] : [])];
  const r = ok(await sh('env', [`KEEPALIVE=${keepAlive ? 1 : 0}`, process.execPath, ...args], 10 * 60_000), `probe ${url} on the host`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number[]; bytes: number };
}

/** Runs the same probe with the guest's node (the file is in the shared workspace). */
export async function guestProbe(suite: Suite, name: string, url: string, count: number, socket?: string, keepAlive = false): Promise<{ ms: number[]; bytes: number }> {
  const probe = path.join(suite.workspacePath(name), '.bench', 'probe.js');
  const r = ok(await cove(['exec', name, '--', 'env', `KEEPALIVE=${keepAlive ? 1 : 0}`, 'node', probe, url, `${count}`, ...(socket ? [socket] : [])], 10 * 60_000), `probe ${url} in the guest`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number[]; bytes: number };
}

const apiGoal = (r: { figure: { median: number }; baseline: { median: number } | null }) => ({
  text: '≤ 1.2× in-guest + 1 ms',
  met: r.baseline !== null && r.figure.median <= 1.2 * r.baseline.median + 1,
});

export async function apiGroup(suite: Suite): Promise<void> {
  if (!suite.want('api.ping') && !suite.want('api.ps20')) return;
  const name = await suite.main();
  const sock = path.join(HOME, 'vms', name, 'docker.sock');
  if (suite.want('api.ping')) {
    const n = suite.samples(20);
    // Interleaved in halves so drift on the machine hits both sides alike.
    const host: number[] = [];
    const guest: number[] = [];
    for (let half = 0; half < 2; half++) {
      host.push(...(await hostProbe('http://docker/_ping', Math.ceil(n / 2), sock)).ms);
      guest.push(...(await guestProbe(suite, name, 'http://docker/_ping', Math.ceil(n / 2), '/var/run/docker.sock')).ms);
    }
    suite.add(
      makeRow({
        id: 'api.ping',
        what: 'GET /_ping through the context (new connection each)',
        unit: 'ms',
        better: 'lower',
        figure: host,
        baselineWhat: 'GET /_ping on /var/run/docker.sock inside the guest (same node client)',
        baseline: guest,
        goal: apiGoal,
      }),
    );
    if (suite.want('api.ping.keepalive')) {
      // Where the time goes: the same requests on one kept-alive connection (one SSH channel
      // through the context) leave out the cost of opening a channel per connection.
      const hk = (await hostProbe('http://docker/_ping', n, sock, true)).ms;
      const gk = (await guestProbe(suite, name, 'http://docker/_ping', n, '/var/run/docker.sock', true)).ms;
      suite.add(
        makeRow({
          id: 'api.ping.keepalive',
          what: 'GET /_ping through the context, all on one kept-alive connection',
          unit: 'ms',
          better: 'lower',
          figure: hk,
          baselineWhat: 'the same in the guest on /var/run/docker.sock',
          baseline: gk,
        }),
      );
    }
  }
  if (suite.want('api.ps20')) {
    await ensureBusybox(name);
    // Created, not started: listing reads dockerd's in-memory view either way, and starting 20
    // containers under TCG on 2 busy cores costs 5 minutes of the suite's 30 (`ps -a` lists them).
    log('creating 20 containers');
    const t0 = Date.now();
    await guestSh(
      name,
      `for i in $(seq 1 20); do docker create --name idle$i ${BUSYBOX_TAG} sleep 1000000 > /dev/null & done; wait; echo made $(docker ps -aq --filter name=idle | wc -l)`,
      15 * 60_000,
      'docker create ×20',
    ).then((o) => {
      if (o.made !== 20) throw new Error(`expected 20 containers, found ${o.made}`);
    });
    log(`20 containers made in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    // The API request `docker ps -a` makes, with the same node client on both sides.
    const nr = suite.samples(10);
    const list = 'http://docker/v1.45/containers/json?all=1';
    const hostReq = [...(await hostProbe(list, Math.ceil(nr / 2), sock)).ms];
    const guestReq = [...(await guestProbe(suite, name, list, Math.ceil(nr / 2), '/var/run/docker.sock')).ms];
    hostReq.push(...(await hostProbe(list, Math.ceil(nr / 2), sock)).ms);
    guestReq.push(...(await guestProbe(suite, name, list, Math.ceil(nr / 2), '/var/run/docker.sock')).ms);
    suite.add(
      makeRow({
        id: 'api.ps20',
        what: 'GET /containers/json?all=1 (what `docker ps -a` asks; 20 containers) through the context',
        unit: 'ms',
        better: 'lower',
        figure: hostReq,
        baselineWhat: 'the same request on /var/run/docker.sock inside the guest (same node client)',
        baseline: guestReq,
        goal: apiGoal,
      }),
    );
    // And the CLI as people run it: the host's docker CLI through the context against the guest's
    // docker CLI inside the guest (which pays its own start-up under TCG).
    const n = suite.samples(5);
    const host: number[] = [];
    for (let i = 0; i < n; i++) host.push(await timeHost('docker ps -a through the context', 'docker', ['--context', `cove-${name}`, 'ps', '-a'], 120_000));
    const g = await guestSh(name, Array.from({ length: n }, (_, i) => timed(`ps${i}`, 'docker ps -a > /dev/null')).join('\n'), 10 * 60_000, 'docker ps -a ×N');
    const guest = Array.from({ length: n }, (_, i) => g[`ps${i}`] / 1000);
    suite.add(
      makeRow({
        id: 'api.ps20.cli',
        what: '`docker ps -a` (20 containers), host docker CLI through the context',
        unit: 'ms',
        better: 'lower',
        figure: host,
        baselineWhat: '`docker ps -a` with the guest docker CLI inside the guest (timed in the guest)',
        baseline: guest,
      }),
    );
    await guestSh(name, 'docker rm -f $(docker ps -aq --filter name=idle) > /dev/null; echo left $(docker ps -aq --filter name=idle | wc -l)', 10 * 60_000, 'docker rm -f idle*');
  }
}

/** A `docker load` tarball with one layer holding BIG_MIB MiB of random bytes (made once). */
function makeBigImage(outFile: string): void {
  if (fs.existsSync(outFile) && fs.statSync(outFile).size > BIG_MIB * 2 ** 20) return;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-bench-img-'));
  try {
    const root = path.join(work, 'root');
    fs.mkdirSync(root);
    const fd = fs.openSync(path.join(root, 'blob'), 'w');
    for (let i = 0; i < BIG_MIB; i++) fs.writeSync(fd, randomBytes(2 ** 20));
    fs.closeSync(fd);
    const layer = path.join(work, 'layer.tar');
    child_process.execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '--mtime=2020-01-01', '-C', root, '-cf', layer, '.']);
    const hash = createHash('sha256');
    const rfd = fs.openSync(layer, 'r');
    const buf = Buffer.alloc(1 << 20);
    for (let n; (n = fs.readSync(rfd, buf)) > 0; ) hash.update(buf.subarray(0, n));
    fs.closeSync(rfd);
    const diffId = hash.digest('hex');
    const config = JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2020-01-01T00:00:00Z',
      config: { Cmd: ['/blob'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
      history: [{ created: '2020-01-01T00:00:00Z', created_by: 'cove bench: 100 MiB of random bytes' }],
    });
    const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
    fs.writeFileSync(path.join(work, configName), config);
    fs.mkdirSync(path.join(work, diffId));
    fs.renameSync(layer, path.join(work, diffId, 'layer.tar'));
    fs.writeFileSync(path.join(work, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: [BIG_TAG], Layers: [`${diffId}/layer.tar`] }]));
    child_process.execFileSync('tar', ['-C', work, '-cf', `${outFile}.tmp`, 'manifest.json', configName, diffId]);
    fs.renameSync(`${outFile}.tmp`, outFile);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

export async function loadGroup(suite: Suite): Promise<void> {
  if (!suite.want('load.100m')) return;
  const name = await suite.main();
  const tar = path.join(suite.workspacePath(name), '.bench', 'big.tar');
  makeBigImage(tar);
  const mib = fs.statSync(tar).size / 2 ** 20;
  // The guest loads from its own disk, not from the share: copy it there first (untimed).
  await guestSh(name, `cp ${tar} /var/tmp/big.tar && sync && echo copied 1`, 10 * 60_000, 'copy the image tarball to the guest disk');
  const rmi = async () => {
    const r = await docker(name, ['rmi', '-f', BIG_TAG], 120_000);
    if (r.code !== 0 && !/No such image/.test(r.stderr)) ok(r, 'docker rmi');
  };
  await rmi();
  // Three loads a side, alternating, and the medians compared: one sample a side moved the ratio from
  // 62 % to 102 % between runs with the machine's load. A load takes 20–50 s a side under TCG now.
  const n = suite.samples(3);
  const host: number[] = [];
  const guest: number[] = [];
  for (let i = 0; i < n; i++) {
    const ms = await timeHost('docker load through the context', 'docker', ['--context', `cove-${name}`, 'load', '-i', tar], 15 * 60_000);
    host.push(mib / (ms / 1000));
    await rmi();
    const g = await guestSh(name, timed('load', 'docker load -i /var/tmp/big.tar > /dev/null'), 15 * 60_000, 'docker load in the guest');
    guest.push(mib / (g.load / 1e6));
    await rmi();
  }
  await guestSh(name, 'rm -f /var/tmp/big.tar; echo removed 1', 60_000, 'rm the tarball');
  suite.add(
    makeRow({
      id: 'load.100m',
      what: `\`docker load\` of a ${mib.toFixed(0)} MiB image through the context`,
      unit: 'MiB/s',
      better: 'higher',
      figure: host,
      baselineWhat: '`docker load` of the same tarball from the guest disk, inside the guest',
      baseline: guest,
      goal: (r) => ({ text: '≥ 80 % of in-guest', met: (r.ratio ?? 0) >= 0.8 }),
    }),
  );
}

/**
 * `cove exec` throughput, host → guest, without Docker: over exec streams with stdin on the stdin
 * port (what `cove exec` without a terminal uses), and over an SSH session channel (`COVE_EXEC_TRANSPORT=ssh`,
 * what it used before and still uses with `-t`), against a pipe in the guest; and `cove cp` of a
 * file, against a pipe into a file on the guest disk. Samples taking turns.
 */
export async function transportGroup(suite: Suite): Promise<void> {
  if (!suite.want('ssh.tput')) return;
  const name = await suite.main();
  const mib = 32;
  const payload = Buffer.alloc(mib * 2 ** 20, 0x5a);
  const n = suite.samples(2);
  const streams: number[] = [];
  const ssh: number[] = [];
  const cp: number[] = [];
  const cpGet: number[] = [];
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cove-bench-cp-')), 'payload.bin');
  fs.writeFileSync(file, payload);
  const once = async (how: 'streams' | 'ssh'): Promise<number> => {
    const t0 = Date.now();
    const env = how === 'ssh' ? { COVE_EXEC_TRANSPORT: 'ssh' } : {};
    ok(await cove(['exec', name, '--', 'sh', '-c', 'cat > /dev/null'], 10 * 60_000, payload, env), `cove exec cat over ${how} (host → guest)`);
    return mib / ((Date.now() - t0) / 1000);
  };
  const copy = async (): Promise<number> => {
    const t0 = Date.now();
    ok(await cove(['cp', file, `${name}:/var/tmp/bench-cp.bin`], 10 * 60_000), 'cove cp of a file to the guest');
    return mib / ((Date.now() - t0) / 1000);
  };
  const back = path.join(path.dirname(file), 'back.bin');
  const copyBack = async (): Promise<number> => {
    fs.rmSync(back, { force: true });
    const t0 = Date.now();
    ok(await cove(['cp', `${name}:/var/tmp/bench-cp.bin`, back], 10 * 60_000), 'cove cp of a file from the guest');
    const ms = Date.now() - t0;
    if (fs.statSync(back).size !== mib * 2 ** 20) throw new Error(`cove cp from the guest made ${fs.statSync(back).size} bytes, not ${mib * 2 ** 20}`);
    return mib / (ms / 1000);
  };
  for (let i = 0; i < n; i++) {
    streams.push(await once('streams'));
    ssh.push(await once('ssh'));
    cp.push(await copy());
    cpGet.push(await copyBack());
  }
  const size = await guestSh(name, 'echo size $(stat -c %s /var/tmp/bench-cp.bin); rm -f /var/tmp/bench-cp.bin', 60_000, 'check and remove the copied file');
  if (size.size !== mib * 2 ** 20) throw new Error(`cove cp left ${size.size} bytes in the guest, not ${mib * 2 ** 20}`);
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  const pipe = `head -c ${mib * 1048576} /dev/zero | cat`;
  const g = await guestSh(
    name,
    Array.from({ length: n }, (_, i) =>
      [timed(`pipe${i}`, `${pipe} > /dev/null`), timed(`file${i}`, `${pipe} > /var/tmp/bench-pipe.bin`), timed(`read${i}`, 'cat /var/tmp/bench-pipe.bin | cat > /dev/null'), 'rm -f /var/tmp/bench-pipe.bin'].join('\n'),
    ).join('\n'),
    10 * 60_000,
    'a pipe in the guest',
  );
  const guest = Array.from({ length: n }, (_, i) => mib / (g[`pipe${i}`] / 1e6));
  const guestFile = Array.from({ length: n }, (_, i) => mib / (g[`file${i}`] / 1e6));
  const guestRead = Array.from({ length: n }, (_, i) => mib / (g[`read${i}`] / 1e6));
  const half = { goal: (r: { ratio?: number | null }) => ({ text: '≥ 50 % of a pipe in the guest', met: (r.ratio ?? 0) >= 0.5 }) };
  const exec = (via: string) => `${mib} MiB host → guest through \`cove exec … cat > /dev/null\` over ${via} (includes its start)`;
  const rows = [
    { id: 'ssh.tput', what: exec('exec streams, stdin on the stdin port'), figure: streams, baselineWhat: 'the same bytes through a pipe inside the guest', baseline: guest, ...half },
    { id: 'ssh.tput.ssh', what: exec('an SSH session channel (`COVE_EXEC_TRANSPORT=ssh`)'), figure: ssh, baselineWhat: 'the same bytes through a pipe inside the guest', baseline: guest },
    {
      id: 'ssh.tput.cp',
      what: `a ${mib} MiB file host → guest through \`cove cp\` (one command over an exec stream writes, sets and renames it; includes its start)`,
      figure: cp,
      baselineWhat: 'the same bytes through a pipe inside the guest into a file on the guest disk',
      baseline: guestFile,
      ...half,
    },
    {
      id: 'ssh.tput.cpget',
      what: `a ${mib} MiB file guest → host through \`cove cp\` (\`cat\` after a header, its stdout on the stdin port; includes its start)`,
      figure: cpGet,
      baselineWhat: 'the same file read from the guest disk through a pipe inside the guest',
      baseline: guestRead,
      ...half,
    },
  ];
  for (const row of rows) suite.add(makeRow({ ...row, unit: 'MiB/s', better: 'higher' }));
}
