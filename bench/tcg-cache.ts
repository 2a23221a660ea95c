// `node out/bench/tcg-cache.js [--sizes 0,128,64,32] [--rounds 2] [--runs 3] [--warm-only]`: what bounding qemu's TCG
// translation cache (COVE_TCG_TB_MIB, -accel tcg,tb-size=N) saves in memory and costs in speed,
// and what the balloon returns after a container frees 500 MiB. Every size gets its own coved and
// $COVE_HOME (sharing one image and its template), and the sizes take turns in each round, so all
// see the same machine noise. Per size and round: a warm `cove up` (restored from the template),
// `--runs` `docker run --rm` in it (3 unless told), its idle PSS split; a cold `cove up --mount-type virtiofs` (guest
// RAM in a memfd, with the balloon), its idle PSS split, then the same after a container that fills
// and frees 500 MiB (left out with `--warm-only`). 0 is QEMU's own default (1 GiB). Results: bench/results/<stamp>-tcg-cache.*
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { makeBusyboxImage } from '../test/helpers/busybox-image';
import { run, type RunResult } from '../test/helpers/harness';
import { BENCH_ROOT, COVE_BIN, HOME, RESULTS, VM_CPUS, VM_MEMORY_MIB, alive, infoJit, log, nowMs, ok, pssKiB, qemuSplit, readPid, sleep, splitText, stats, treePss, qemuVersionLine, waitUntil, type QemuSplit } from './lib';

const SETTLE_MS = 15_000;
const TAG = 'cove-bench/busybox:latest';

interface Sample {
  size: number;
  round: number;
  warmUpS: number;
  dockerRunS: number[];
  warm: QemuSplit | null;
  warmPasstMiB: number;
  warmAfter500: QemuSplit | null;
  coldUpS: number;
  cold: QemuSplit | null;
  coldHelpersMiB: number;
  coldAfter500: QemuSplit | null;
  covedMiB: number;
  /** qemu's CPU seconds (user + system): the cold boot until ready, the warm sandbox's three runs. */
  coldBootCpuS: number;
  dockerRunCpuS: number;
  /** How often the translation cache filled and was flushed (`info jit`): cold until idle, warm during the runs. */
  coldFlushes: number;
  warmFlushes: number;
}

/** A process's CPU seconds (utime + stime) from /proc/<pid>/stat. */
function cpuSeconds(pid: number | null): number {
  if (!pid) return NaN;
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/** The translation cache's flush count, from `info jit` over QMP. */
async function flushes(dir: string): Promise<number> {
  try {
    return (await infoJit(dir)).flushes;
  } catch {
    return NaN;
  }
}

function homeFor(size: number): string {
  const home = path.join(BENCH_ROOT, 'tcg', `tb${size}`);
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  // One image (and so one template) for every size: the template's binding does not name the size.
  for (const d of ['images', 'cache', 'locks']) {
    const mine = path.join(home, d);
    if (!fs.existsSync(mine)) {
      fs.mkdirSync(path.join(HOME, d), { recursive: true });
      fs.symlinkSync(path.join(HOME, d), mine);
    }
  }
  if (!fs.existsSync(path.join(home, 'accel.json')) && fs.existsSync(path.join(HOME, 'accel.json'))) fs.copyFileSync(path.join(HOME, 'accel.json'), path.join(home, 'accel.json'));
  return home;
}

function envFor(size: number): NodeJS.ProcessEnv {
  return { ...process.env, COVE_HOME: homeFor(size), COVE_TCG_TB_MIB: String(size), DOCKER_CONFIG: path.join(BENCH_ROOT, 'tcg', 'docker') };
}

const cove = (size: number, args: string[], timeoutMs = 120_000): Promise<RunResult> => run(process.execPath, [COVE_BIN, ...args], { timeoutMs, env: envFor(size) });
const docker = (size: number, name: string, args: string[], timeoutMs = 120_000): Promise<RunResult> => run('docker', ['--context', `cove-${name}`, ...args], { timeoutMs, env: envFor(size) });

async function up(size: number, name: string, mount: '9p' | 'virtiofs'): Promise<number> {
  const ws = path.join(BENCH_ROOT, 'tcg', 'ws', name);
  fs.rmSync(ws, { recursive: true, force: true });
  fs.mkdirSync(ws, { recursive: true });
  const t0 = nowMs();
  ok(await cove(size, ['up', ws, '--name', name, '--cpus', `${VM_CPUS}`, '--memory', `${VM_MEMORY_MIB}M`, '--mount-type', mount], 20 * 60_000), `cove up ${name}`);
  await waitUntil(`docker version through cove-${name}`, 120_000, async () => (await docker(size, name, ['version', '--format', '{{.Server.Version}}'], 60_000)).code === 0, 100);
  return (nowMs() - t0) / 1000;
}

const vmDir = (size: number, name: string) => path.join(homeFor(size), 'vms', name);
const split = (size: number, name: string) => qemuSplit(readPid(path.join(vmDir(size, name), 'qemu.pid')), VM_MEMORY_MIB);
const helpers = (size: number, name: string) => treePss([readPid(path.join(vmDir(size, name), 'passt.pid')), readPid(path.join(vmDir(size, name), 'virtiofsd.pid'))]).pssMiB;

/** A container that fills 500 MiB of tmpfs and exits (the guest frees it); then the settle time. */
async function fill500(size: number, name: string): Promise<void> {
  ok(await docker(size, name, ['run', '--rm', '--tmpfs', '/fill:size=600m', TAG, 'sh', '-c', 'dd if=/dev/zero of=/fill/x bs=1M count=500 2>/dev/null && rm /fill/x'], 300_000), 'the 500 MiB container');
  await sleep(SETTLE_MS);
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { sizes: { type: 'string' }, rounds: { type: 'string' }, runs: { type: 'string' }, 'warm-only': { type: 'boolean' } } });
  const sizes = (values.sizes ?? '0,128,64,32').split(',').map(Number);
  const rounds = Number(values.rounds ?? '2');
  const runs = Number(values.runs ?? '3');
  const warmOnly = values['warm-only'] === true;
  if (![...sizes, rounds, runs].every((n) => Number.isInteger(n) && n >= 0) || rounds < 1 || runs < 1) {
    throw new Error('--sizes takes whole MiB (0 for QEMU\'s own), --rounds and --runs whole numbers from 1');
  }
  const tar = path.join(BENCH_ROOT, 'busybox.tar');
  fs.mkdirSync(BENCH_ROOT, { recursive: true });
  if (!fs.existsSync(tar)) makeBusyboxImage(tar, TAG);
  const started = new Date();
  const samples: Sample[] = [];
  const names = new Set<[number, string]>();
  try {
    // The template is made once, by the first size, untimed.
    log('making (or finding) the template');
    await up(sizes[0], 'tprime', '9p');
    ok(await cove(sizes[0], ['rm', '--force', 'tprime'], 180_000), 'cove rm tprime');
    for (let round = 0; round < rounds; round++) {
      for (const size of sizes) {
        const w = `tw${size}`;
        const c = `tc${size}`;
        names.add([size, w]);
        const warmUpS = await up(size, w, '9p');
        ok(await docker(size, w, ['load', '-i', tar], 300_000), 'docker load');
        const dockerRunS: number[] = [];
        const wq = readPid(path.join(vmDir(size, w), 'qemu.pid'));
        const cpu0 = cpuSeconds(wq);
        const flushes0 = await flushes(vmDir(size, w));
        for (let i = 0; i < runs; i++) {
          const t0 = nowMs();
          ok(await docker(size, w, ['run', '--rm', TAG, 'true'], 300_000), 'docker run');
          dockerRunS.push((nowMs() - t0) / 1000);
        }
        const dockerRunCpuS = cpuSeconds(wq) - cpu0;
        const warmFlushes = (await flushes(vmDir(size, w))) - flushes0;
        await sleep(SETTLE_MS);
        const warm = split(size, w);
        const warmPasstMiB = helpers(size, w);
        await fill500(size, w);
        const warmAfter500 = split(size, w);
        ok(await cove(size, ['rm', '--force', w], 180_000), `cove rm ${w}`);
        if (warmOnly) {
          const s: Sample = { size, round, warmUpS, dockerRunS, warm, warmPasstMiB, warmAfter500, coldUpS: NaN, cold: null, coldHelpersMiB: NaN, coldAfter500: null, covedMiB: NaN, coldBootCpuS: NaN, dockerRunCpuS, coldFlushes: NaN, warmFlushes };
          samples.push(s);
          log(`tb ${size || 'default'}: warm up ${warmUpS.toFixed(1)} s, docker run ${dockerRunS.map((x) => x.toFixed(1)).join('/')} s (qemu CPU ${dockerRunCpuS.toFixed(1)} s, ${warmFlushes} flushes), warm ${splitText(warm)}, after 500 MiB ${warmAfter500?.totalMiB.toFixed(0)}`);
          continue;
        }
        names.add([size, c]);
        const coldUpS = await up(size, c, 'virtiofs');
        const coldBootCpuS = cpuSeconds(readPid(path.join(vmDir(size, c), 'qemu.pid')));
        await sleep(SETTLE_MS);
        const coldFlushes = await flushes(vmDir(size, c));
        const cold = split(size, c);
        const coldHelpersMiB = helpers(size, c);
        const covedPid = readPid(path.join(homeFor(size), 'coved.pid'));
        // coved alone: its children are the sandbox's passt (and virtiofsd), counted with the sandbox.
        const covedMiB = covedPid && alive(covedPid) ? pssKiB(covedPid).pss / 1024 : 0;
        ok(await docker(size, c, ['load', '-i', tar], 300_000), 'docker load');
        await fill500(size, c);
        const coldAfter500 = split(size, c);
        ok(await cove(size, ['rm', '--force', c], 180_000), `cove rm ${c}`);
        const s: Sample = { size, round, warmUpS, dockerRunS, warm, warmPasstMiB, warmAfter500, coldUpS, cold, coldHelpersMiB, coldAfter500, covedMiB, coldBootCpuS, dockerRunCpuS, coldFlushes, warmFlushes };
        samples.push(s);
        log(`tb ${size || 'default'}: warm up ${warmUpS.toFixed(1)} s, docker run ${dockerRunS.map((x) => x.toFixed(1)).join('/')} s (qemu CPU ${dockerRunCpuS.toFixed(1)} s, ${warmFlushes} flushes), warm ${splitText(warm)}, after 500 MiB ${warmAfter500?.totalMiB.toFixed(0)}; cold up ${coldUpS.toFixed(1)} s (qemu CPU ${coldBootCpuS.toFixed(1)} s, ${coldFlushes} flushes), cold ${splitText(cold)}, after 500 MiB ${coldAfter500?.totalMiB.toFixed(0)}; helpers ${coldHelpersMiB.toFixed(0)}, coved ${covedMiB.toFixed(0)}`);
      }
    }
  } finally {
    for (const [size, name] of names) await cove(size, ['rm', '--force', name], 180_000).catch(() => undefined);
    for (const size of sizes) {
      const pid = readPid(path.join(homeFor(size), 'coved.pid'));
      if (pid && alive(pid)) process.kill(pid, 'SIGTERM');
    }
  }
  const med = (xs: number[]) => stats(xs).median;
  // A figure the run did not measure (the cold half with --warm-only) is a dash.
  const fx = (x: number, digits: number) => (Number.isFinite(x) ? x.toFixed(digits) : '—');
  const f = (x: number) => fx(x, 0);
  const lines = [
    `# TCG translation cache sweep (${started.toISOString()})`,
    '',
    `${qemuVersionLine()}; ${VM_CPUS} vCPUs, ${VM_MEMORY_MIB} MiB guests, ${rounds} rounds of a \`docker load\` and ${runs} \`docker run\` per size, sizes taking turns${warmOnly ? ', warm sandboxes only' : ''}; medians. PSS in MiB, times in s. 0 = QEMU's default (1 GiB).`,
    '',
    '| tb-size | warm up | docker run | its qemu CPU | its flushes | warm qemu | warm TCG | warm guest RAM | warm after 500 MiB | cold up | its qemu CPU | cold flushes | cold qemu | cold TCG | cold guest RAM | cold after 500 MiB | passt+virtiofsd |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const size of sizes) {
    const ss = samples.filter((s) => s.size === size);
    if (ss.length === 0) continue;
    const m = (g: (s: Sample) => number | undefined) => med(ss.map((s) => g(s) ?? NaN));
    lines.push(
      `| ${size || 'default'} | ${fx(m((s) => s.warmUpS), 1)} | ${fx(med(ss.flatMap((s) => s.dockerRunS)), 1)} | ${fx(m((s) => s.dockerRunCpuS), 1)} | ${f(m((s) => s.warmFlushes))} | ${f(m((s) => s.warm?.totalMiB))} | ${f(m((s) => s.warm?.tcgCacheMiB))} | ${f(m((s) => s.warm?.guestRamMiB))} | ${f(m((s) => s.warmAfter500?.totalMiB))} | ${fx(m((s) => s.coldUpS), 1)} | ${fx(m((s) => s.coldBootCpuS), 1)} | ${f(m((s) => s.coldFlushes))} | ${f(m((s) => s.cold?.totalMiB))} | ${f(m((s) => s.cold?.tcgCacheMiB))} | ${f(m((s) => s.cold?.guestRamMiB))} | ${f(m((s) => s.coldAfter500?.totalMiB))} | ${f(m((s) => s.coldHelpersMiB))} |`,
    );
  }
  const stamp = started.toISOString().replace(/[:]/g, '-').replace(/\..*$/, '');
  fs.mkdirSync(RESULTS, { recursive: true });
  fs.writeFileSync(path.join(RESULTS, `${stamp}-tcg-cache.json`), JSON.stringify({ started, rounds, sizes, samples }, null, 2) + '\n');
  fs.writeFileSync(path.join(RESULTS, `${stamp}-tcg-cache.md`), lines.join('\n') + '\n');
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`tcg-cache: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
