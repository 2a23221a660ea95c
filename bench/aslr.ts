// Rows run.aslr and run.aslr.tcg: what the guest's address randomization costs a container start
// under TCG. One clone of the template (as `cove up` makes it) runs `docker run --rm busybox true`
// with kernel.randomize_va_space as Cove sets it on this host and with the kernel's default (2),
// taking turns in the same sandbox; qemu's `info jit` says how much translated code each run added.
// QEMU before 8.0 keys a translation by the guest's virtual address too, so with randomization every
// run's processes are translated afresh (vmm-host/driver/guest-aslr.ts).
import * as path from 'node:path';
import { guestAslr } from '../vmm-host/driver/guest-aslr';
import { BUSYBOX_TAG, ensureBusybox } from './api';
import { HOME, cove, docker, infoJit, log, makeRow, nowMs, ok, qemuVersionLine } from './lib';
import type { Suite } from './suite';

const NAME = 'ra';

async function setRandomization(value: '0' | '2'): Promise<void> {
  ok(await cove(['exec', NAME, '--', 'sysctl', '-q', '-w', `kernel.randomize_va_space=${value}`], 120_000), `set randomize_va_space=${value}`);
}

export async function aslrGroup(suite: Suite): Promise<void> {
  if (!suite.want('run.aslr')) return;
  const accel = suite.accel?.accel ?? 'tcg';
  if (accel !== 'tcg') {
    log('run.aslr: skipped: under KVM the guest runs its code natively, so there is no translation to repeat and Cove keeps randomization on');
    return;
  }
  const qemu = qemuVersionLine();
  const coves = guestAslr(accel, qemu) ? '2' : '0';
  await suite.up(NAME, suite.workspace(NAME), '9p');
  const vmDir = path.join(HOME, 'vms', NAME);
  try {
    const set = ok(await cove(['exec', NAME, '--', 'cat', '/proc/sys/kernel/randomize_va_space']), 'read randomize_va_space');
    if (set.stdout.trim() !== coves) throw new Error(`run.aslr: the clone has randomize_va_space=${set.stdout.trim()}, but coved should have set ${coves} on ${qemu}`);
    await ensureBusybox(NAME);
    const runOnce = async (): Promise<{ s: number; mib: number }> => {
      const before = (await infoJit(vmDir)).genCodeBytes;
      const t0 = nowMs();
      ok(await docker(NAME, ['run', '--rm', BUSYBOX_TAG, 'true'], 300_000), 'docker run --rm busybox true');
      const s = (nowMs() - t0) / 1000;
      return { s, mib: ((await infoJit(vmDir)).genCodeBytes - before) / 2 ** 20 };
    };
    // One run each way first: what the restore left untranslated (runc, the shim) is translated once whatever the setting.
    for (const v of ['2', coves] as const) {
      await setRandomization(v);
      await runOnce();
    }
    const mine = { s: [] as number[], mib: [] as number[] };
    const dflt = { s: [] as number[], mib: [] as number[] };
    const n = suite.samples(5);
    for (let i = 0; i < n; i++) {
      // Taking turns, the order flipped every round, so drift in the machine's load hits both sides.
      const order: Array<['2' | '0', typeof mine]> = i % 2 ? [['2', dflt], [coves, mine]] : [[coves, mine], ['2', dflt]];
      for (const [v, into] of order) {
        await setRandomization(v);
        const r = await runOnce();
        into.s.push(r.s);
        into.mib.push(r.mib);
      }
    }
    log(`run.aslr: as set (${coves}) ${mine.s.map((x) => x.toFixed(2)).join('/')} s, +${mine.mib.map((x) => x.toFixed(0)).join('/')} MiB; randomized ${dflt.s.map((x) => x.toFixed(2)).join('/')} s, +${dflt.mib.map((x) => x.toFixed(0)).join('/')} MiB`);
    const setting = coves === '0' ? 'off (the default under TCG on QEMU before 8.0)' : 'on (the default here)';
    const note = `${qemu}; Cove's setting here: ${setting}. One clone, the two settings taking turns (sysctl kernel.randomize_va_space between runs), one warm-up run each first. A flush of the cache (full) in a run makes that run translate everything again`;
    suite.add(
      makeRow({
        id: 'run.aslr',
        what: '`docker run --rm busybox true` through the context, in a warm clone, with the guest\'s address randomization as Cove sets it',
        unit: 's',
        better: 'lower',
        figure: mine.s,
        baselineWhat: 'the same with randomization on (kernel.randomize_va_space=2, the kernel default), same sandbox, taking turns',
        baseline: dflt.s,
        note,
      }),
    );
    suite.add(
      makeRow({
        id: 'run.aslr.tcg',
        what: 'translated code added to qemu\'s TCG cache by one `docker run --rm busybox true` (`info jit` gen code size), randomization as Cove sets it',
        unit: 'MiB',
        better: 'lower',
        figure: mine.mib,
        baselineWhat: 'the same with randomization on, same sandbox, taking turns',
        baseline: dflt.mib,
        note: `${note}. On QEMU 7.2 the cache is never shrunk short of a flush, so this is host memory that stays with the sandbox up to 1 GiB`,
      }),
    );
  } finally {
    await suite.rm(NAME);
  }
}
