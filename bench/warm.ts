// Warm start and sleep (docs/warm-start.md), measured side by side with the cold boot of the same
// run: a new sandbox restored from the template, a paused one answering /_ping, an asleep one
// answering `docker ps`, and what an idle sandbox costs as it really sits (paused, then asleep).
import * as http from 'node:http';
import * as path from 'node:path';
import { HOME, VM_MEMORY_MIB, cove, docker, log, makeRow, nowMs, ok, qemuSplit, readPid, sleep, splitText, treePss, waitUntil } from './lib';
import { processesOf } from '../test/helpers/harness';
import type { Suite } from './suite';

const WARM_ROWS = ['boot.warm', 'wake.paused', 'wake.disk', 'mem.asleep', 'mem.fit16g'];

/** GET /_ping on a new connection to a sandbox's docker.sock; resolves with the wall time in ms. */
function ping(sock: string, timeoutMs = 120_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.get({ socketPath: sock, path: '/_ping', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(nowMs() - t0) : reject(new Error(`/_ping answered ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`/_ping did not answer within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
  });
}

const state = async (name: string) => (JSON.parse(ok(await cove(['inspect', name, '--json'], 60_000), 'cove inspect').stdout) as { state: string; bootKind: string | null; warmNote?: string }).state;

const covedPss = () => {
  const pid = readPid(path.join(HOME, 'coved.pid'));
  return pid ? treePss([pid]).pssMiB : 0;
};

export async function warmGroup(suite: Suite): Promise<void> {
  if (!WARM_ROWS.some((r) => suite.want(r))) return;
  const covedBefore = covedPss();
  // The cold figure this group compares against: the boot group's when it ran, else one cold boot now
  // (virtio-fs on purpose: QEMU 7.2 cannot save it, so coved boots it cold).
  let cold = ((suite.profile['boot.cold'] as { coveMs?: number[] } | undefined)?.coveMs ?? []).map((x) => x / 1000);
  if (cold.length === 0) {
    log('warm: one cold boot to compare against');
    cold = [(await suite.up('wcold', suite.workspace('wcold'), 'virtiofs')) / 1000];
    await suite.rm('wcold');
  }
  // The first warm sandbox of an image makes its template (about one cold boot): not timed as warm.
  log('warm: making (or finding) the template');
  const t0 = nowMs();
  await suite.up('wprime', suite.workspace('wprime'), '9p');
  const primeS = (nowMs() - t0) / 1000;
  await suite.rm('wprime');
  const warm: number[] = [];
  const n = suite.samples(3);
  for (let i = 0; i < n; i++) {
    const name = `w${i}`;
    const ms = await suite.up(name, suite.workspace(name), '9p');
    warm.push(ms / 1000);
    log(`warm: cove up ${name} + docker version in ${(ms / 1000).toFixed(1)} s`);
    if (i < n - 1) await suite.rm(name);
  }
  const name = `w${n - 1}`;
  const dir = path.join(HOME, 'vms', name);
  const sock = path.join(dir, 'docker.sock');
  if (suite.want('boot.warm')) {
    suite.add(
      makeRow({
        id: 'boot.warm',
        what: 'new sandbox from the template: `cove up` → `docker version` answers through the context',
        unit: 's',
        better: 'lower',
        figure: warm,
        baselineWhat: 'boot.cold of this run (a cold `cove up`)',
        baseline: cold,
        goal: (r) => ({ text: '≤ 10 % of boot.cold', met: (r.ratio ?? Infinity) <= 0.1 }),
        note: `the first warm sandbox of this image made or found the template in ${primeS.toFixed(1)} s`,
      }),
    );
  }
  const runningProcs = processesOf(dir).length;
  if (suite.want('wake.paused')) {
    const base: number[] = [];
    const paused: number[] = [];
    for (let i = 0; i < suite.samples(5); i++) base.push(await ping(sock));
    for (let i = 0; i < suite.samples(5); i++) {
      ok(await cove(['pause', name], 60_000), 'cove pause');
      if ((await state(name)) !== 'paused') throw new Error(`${name} did not pause`);
      paused.push(await ping(sock));
    }
    suite.add(
      makeRow({
        id: 'wake.paused',
        what: 'paused sandbox: a new connection\'s GET /_ping answers (resume included)',
        unit: 'ms',
        better: 'lower',
        figure: paused,
        baselineWhat: 'GET /_ping on a new connection to the same sandbox running',
        baseline: base,
        goal: (r) => ({ text: '≤ 100 ms', met: r.figure.median <= 100 }),
      }),
    );
  }
  // The same sandbox idle and running, then paused, for the memory rows.
  await sleep(15_000);
  const runningPss = treePss([readPid(path.join(dir, 'qemu.pid')), readPid(path.join(dir, 'passt.pid'))]);
  const runningSplit = qemuSplit(readPid(path.join(dir, 'qemu.pid')), VM_MEMORY_MIB);
  const covedRunning = covedPss();
  ok(await cove(['pause', name], 60_000), 'cove pause');
  await sleep(3000);
  const pausedPss = treePss([readPid(path.join(dir, 'qemu.pid')), readPid(path.join(dir, 'passt.pid'))]);
  await ping(sock);
  const disk: number[] = [];
  let asleepProcs = -1;
  let saveMs = 0;
  for (let i = 0; i < suite.samples(3); i++) {
    const s0 = nowMs();
    ok(await cove(['sleep', name], 300_000), 'cove sleep');
    saveMs = nowMs() - s0;
    if ((await state(name)) !== 'asleep') throw new Error(`${name} did not go to sleep`);
    asleepProcs = processesOf(dir).length;
    const w0 = nowMs();
    await waitUntil(`docker ps through cove-${name} to wake it`, 300_000, async () => (await docker(name, ['ps'], 300_000)).code === 0, 50);
    disk.push((nowMs() - w0) / 1000);
  }
  if (suite.want('wake.disk')) {
    suite.add(
      makeRow({
        id: 'wake.disk',
        what: 'asleep sandbox: `docker ps` through the context answers (restore from disk included)',
        unit: 's',
        better: 'lower',
        figure: disk,
        baselineWhat: 'boot.cold of this run',
        baseline: cold,
        goal: (r) => ({ text: '≤ 10 % of boot.cold', met: (r.ratio ?? Infinity) <= 0.1 }),
        note: `\`cove sleep\` took ${(saveMs / 1000).toFixed(1)} s; the state file holds the guest's touched RAM`,
      }),
    );
  }
  if (suite.want('mem.asleep')) {
    suite.add(
      makeRow({
        id: 'mem.asleep',
        what: 'VM processes (qemu, passt, virtiofsd) left for an asleep sandbox',
        unit: 'processes',
        better: 'lower',
        figure: [asleepProcs],
        baselineWhat: 'the same sandbox running',
        baseline: [runningProcs],
        goal: (r) => ({ text: 'none', met: r.figure.median === 0 }),
      }),
    );
  }
  if (suite.want('mem.fit16g')) {
    // Running sandboxes made from one template share the page cache of its RAM file (their clean
    // guest pages) and of the image's kernel: that is paid once, like coved; each sandbox adds its
    // own written guest pages, its TCG cache, qemu's own memory and passt.
    const mem16 = 16 * 1024;
    const shared = runningSplit?.fileMiB ?? 0;
    const own = Math.max(1, runningPss.pssMiB - shared);
    const fit = (per: number, once: number) => Math.max(0, Math.floor((mem16 - once) / Math.max(1, per)));
    // Asleep, a sandbox holds no VM memory; what is left is coved's share (its sockets, forwards).
    const covedAfter = covedPss();
    const asleepMiB = Math.max(1, covedAfter - covedBefore);
    const bare = suite.bare.pssMiB;
    suite.add(
      makeRow({
        id: 'mem.fit16g',
        what: 'idle running sandboxes (restored from the template, the default) in 16 GiB: coved and the template\'s page cache once, then each one\'s own PSS',
        unit: 'VMs',
        better: 'higher',
        figure: [fit(own, covedRunning + shared)],
        baselineWhat: bare.length ? 'bare-limit VMs (cold boot, no agent, no passt) in 16 GiB' : 'none (the bare limit is measured by the mem.idle row)',
        baseline: bare.length ? [fit(Math.min(...bare), 0)] : null,
        goal: (r) => ({ text: '≥ 60', met: r.figure.median >= 60 }),
        note: `sandbox PSS ${runningPss.pssMiB.toFixed(0)} MiB (${splitText(runningSplit)}, passt ${(runningPss.pssMiB - (runningSplit?.totalMiB ?? 0)).toFixed(0)}), of which file pages shared by every sandbox of the image ${shared.toFixed(0)}, its own ${own.toFixed(0)}; coved ${covedRunning.toFixed(0)} MiB; counted in full each: ${fit(runningPss.pssMiB, covedRunning)}; paused ${pausedPss.pssMiB.toFixed(0)} MiB; asleep (after 35 min idle): no VM process, coved ${covedBefore.toFixed(0)} → ${covedAfter.toFixed(0)} MiB = ${fit(asleepMiB, 0)}; guest has ${VM_MEMORY_MIB} MiB`,
      }),
    );
  }
}
