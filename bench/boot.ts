// Rows 1 and 6: cold boot to `docker version` through the context against the bare limit (the same
// kernel, initramfs and base disk, the same qemu command line, booted with
// `cove.init=/usr/lib/cove/bare-init`: only containerd and dockerd, ready when dockerd answers
// /_ping in the guest and the guest prints so on the serial console); and the host memory of an
// idle docker-ready sandbox against the same bare VM.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DEFAULT_NETWORK, writeConfigDisk } from '../contract/config-disk';
import { GUEST } from '../contract/guest';
import { IMAGE, VM } from '../contract/layout';
import { QemuDriver, createOverlay, specFromLayout } from '../vmm-host/driver';
import { HOME, VM_CPUS, VM_MEMORY_MIB, alive, listSandboxes, log, runningSandboxes, makeRow, nowMs, qemuSplit, readPid, sandboxMemory, sandboxText, sleep, splitText, tcgCacheText, treePss, type QemuSplit, type SandboxMemory } from './lib';
import type { Suite } from './suite';

const SETTLE_MS = 15_000;
const BOOT_DEADLINE_MS = 10 * 60_000;

/** Guest uptime (s) on the console line that matches RE, or null. */
function consoleUptime(consoleLog: string, re: RegExp): number | null {
  try {
    const m = new RegExp(`${re.source}.*? t=([\\d.]+)s`).exec(fs.readFileSync(consoleLog, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Every `cove: … t=<uptime>s` console line, as [what, seconds]: where a boot's time goes. */
function consoleMarkers(consoleLog: string): Array<[string, number]> {
  try {
    return [...fs.readFileSync(consoleLog, 'utf8').matchAll(/cove: (.*?) t=([\d.]+)s/g)].map((m) => [m[1], Number(m[2])]);
  } catch {
    return [];
  }
}

/** Boots the bare limit once; returns the boot time and leaves the VM running. */
async function bareBoot(suite: Suite, dir: string, ws: string): Promise<{ ms: number; guestReadyS: number | null; pids: { qemu: number; virtiofsd: number | null } }> {
  await new QemuDriver(suite.accel!.accel).stop(dir).catch(() => undefined);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  suite.bareDirs.add(dir);
  const consoleLog = path.join(dir, VM.consoleLog);
  const t0 = nowMs();
  // The same work cove does before qemu starts: the disk overlay and the config disk.
  await createOverlay(path.join(suite.imageDir, IMAGE.baseDisk), path.join(dir, VM.disk), 20 * 1024 ** 3);
  writeConfigDisk(path.join(dir, VM.configDisk), {
    version: 1,
    name: 'bare',
    hostname: 'bare',
    hostKey: '',
    authorizedKeys: [],
    mounts: [{ tag: GUEST.workspaceTag, type: suite.mountType, path: ws, readonly: false }],
    network: DEFAULT_NETWORK,
    resizeRoot: false,
    insecureRegistries: [],
  });
  const pids = await new QemuDriver(suite.accel!.accel).start(specFromLayout({
    network: 'user',
    imageDir: suite.imageDir,
    vmDir: dir,
    cpus: VM_CPUS,
    memoryMiB: VM_MEMORY_MIB,
    accel: suite.accel!.accel,
    tscKhz: suite.accel!.tscKhz,
    share: { type: suite.mountType, hostPath: ws, readonly: false },
    // The machine a cold `cove up` gets: freed guest pages go back to the host.
    balloon: true,
    kernelArgsExtra: ['cove.init=/usr/lib/cove/bare-init'],
  }));
  // The host sees the marker as soon as the guest writes it to the serial console (a file here).
  const deadline = Date.now() + BOOT_DEADLINE_MS;
  let pos = 0;
  let text = '';
  for (;;) {
    try {
      const buf = fs.readFileSync(consoleLog);
      if (buf.length > pos) {
        text += buf.subarray(pos).toString('utf8');
        pos = buf.length;
        if (/cove: ready t=/.test(text)) break;
        if (/initramfs FAILED|did not answer \/_ping/.test(text)) throw new Error(`the bare VM failed to boot: ${text.split('\n').filter((l) => l.includes('cove:')).slice(-3).join(' | ')}`);
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (!alive(pids.qemu)) throw new Error(`the bare VM's qemu exited before dockerd answered; see ${consoleLog} and ${path.join(dir, VM.qemuLog)}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${BOOT_DEADLINE_MS / 1000} s waiting for the bare VM's "cove: ready" console line (${consoleLog})`);
    await sleep(50);
  }
  const ms = nowMs() - t0;
  return { ms, guestReadyS: consoleUptime(consoleLog, /cove: ready/), pids };
}


export async function bootGroup(suite: Suite): Promise<void> {
  const wantBoot = suite.want('boot.cold');
  const wantMem = suite.want('mem.idle');
  const wantRestart = suite.want('life.restart');
  if (!wantBoot && !wantMem && !wantRestart) return;
  const n = wantBoot ? suite.samples(1) : 1;
  const bareDir = path.join(HOME, 'bare-vm');
  const bareWs = suite.workspace('bare');
  const cove: number[] = [];
  const coveGuest: number[] = [];
  let covePss: SandboxMemory | null = null;
  let covedSandboxes = 1;
  let bareSplit: QemuSplit | null = null;
  let bareMarkers: Array<[string, number]>;
  for (let i = 0; i < n; i++) {
    // Alternate bare and cove, one at a time, so both see the same machine noise.
    log(`boot ${i + 1}/${n}: the bare limit`);
    const b = await bareBoot(suite, bareDir, bareWs);
    suite.bare.bootMs.push(b.ms);
    if (b.guestReadyS !== null) suite.bare.guestReadyS.push(b.guestReadyS);
    log(`bare limit ready in ${(b.ms / 1000).toFixed(1)} s (guest uptime ${b.guestReadyS ?? '?'} s)`);
    if (i === n - 1 && wantMem) {
      await sleep(SETTLE_MS);
      const m = treePss([b.pids.qemu, b.pids.virtiofsd]);
      bareSplit = qemuSplit(b.pids.qemu, VM_MEMORY_MIB);
      suite.bare.pssMiB.push(m.pssMiB);
      suite.profile['mem.bare'] = { ...m, split: bareSplit };
    }
    bareMarkers = consoleMarkers(path.join(bareDir, VM.consoleLog));
    const t0 = nowMs();
    await new QemuDriver(suite.accel!.accel).stop(bareDir);
    suite.bare.stopMs.push(nowMs() - t0);
    suite.bareDirs.delete(bareDir);
    if (!wantBoot && !wantMem) continue;
    log(`boot ${i + 1}/${n}: cove up`);
    if (suite.sandboxes.has('bv')) await suite.rm('bv');
    else await suite.rm('bv').catch(() => undefined);
    const ms = await suite.up('bv', suite.workspace('bv'), suite.mountType);
    cove.push(ms);
    suite.profile['boot.markers'] = { bare: bareMarkers, cove: consoleMarkers(path.join(HOME, 'vms', 'bv', VM.consoleLog)) };
    const g = consoleUptime(path.join(HOME, 'vms', 'bv', VM.consoleLog), /cove: ready/);
    if (g !== null) coveGuest.push(g);
    log(`cove up + docker version in ${(ms / 1000).toFixed(1)} s (guest uptime at ready ${g ?? '?'} s)`);
    if (i === n - 1 && wantMem) {
      await sleep(SETTLE_MS);
      const vmDir = path.join(HOME, 'vms', 'bv');
      // coved's share: its memory over the sandboxes it runs (this one alone, in a run of the mem rows).
      covedSandboxes = runningSandboxes(await listSandboxes());
      covePss = sandboxMemory(vmDir, VM_MEMORY_MIB, readPid(path.join(HOME, 'coved.pid')), covedSandboxes);
      suite.profile['mem.cove'] = covePss;
    }
  }
  fs.rmSync(bareDir, { recursive: true, force: true });
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
  if (wantBoot) {
    const bareGuest = suite.bare.guestReadyS.length ? med(suite.bare.guestReadyS) : null;
    const coveG = coveGuest.length ? med(coveGuest) : null;
    suite.profile['boot.cold'] = { bareGuestReadyS: suite.bare.guestReadyS, coveGuestReadyS: coveGuest, bareMs: suite.bare.bootMs, coveMs: cove };
    suite.add(
      makeRow({
        id: 'boot.cold',
        what: 'cold boot: `cove up` → `docker version` answers through the context',
        unit: 's',
        better: 'lower',
        figure: cove.map((x) => x / 1000),
        baselineWhat: 'same kernel+disk, bare-init (containerd+dockerd only), /_ping marker on the console',
        baseline: suite.bare.bootMs.map((x) => x / 1000),
        goal: (r) => ({ text: '≤ 1.15× the bare limit', met: (r.ratio ?? Infinity) <= 1.15 }),
        note:
          bareGuest !== null && coveG !== null
            ? `guest uptime at ready: cove ${coveG.toFixed(1)} s, bare ${bareGuest.toFixed(1)} s; host side after the guest is ready: cove ${(med(cove) / 1000 - coveG).toFixed(1)} s, bare ${(med(suite.bare.bootMs) / 1000 - bareGuest).toFixed(1)} s`
            : undefined,
      }),
    );
  }
  if (wantMem && covePss) {
    suite.add(
      makeRow({
        id: 'mem.idle',
        what: 'host memory (PSS) of an idle docker-ready sandbox (cold boot, virtio-fs): qemu + virtiofsd + passt + its share of coved',
        unit: 'MiB',
        better: 'lower',
        figure: [covePss.totalMiB],
        baselineWhat: 'the bare-limit VM (qemu + virtiofsd), same size, idle after /_ping',
        baseline: suite.bare.pssMiB,
        goal: (r) => ({ text: '≤ 250 MiB', met: r.figure.median <= 250 }),
        note: `cove: ${sandboxText(covePss)} MiB (coved's PSS over the ${covedSandboxes} running sandbox(es)). bare: ${splitText(bareSplit)} MiB. Guest has ${VM_MEMORY_MIB} MiB; TCG cache: ${tcgCacheText()}; measured ${SETTLE_MS / 1000} s after ready`,
      }),
    );
  }
}
