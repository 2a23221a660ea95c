// Row mem.idle.warm: what an idle sandbox costs the host as `cove up` makes it — a clone of the
// image's template — with several clones of one template running side by side, as a user with a few
// projects has them. PSS divides the page cache of the template's RAM file (the clean guest pages
// every clone maps) among the processes that map it, and coved's PSS is divided by the sandboxes it
// runs; each clone's written guest pages, TCG cache, qemu and passt are its own.
import * as path from 'node:path';
import { HOME, VM_MEMORY_MIB, guestRamFile, listSandboxes, log, makeRow, mappersOf, readPid, runningSandboxes, sandboxMemory, sandboxText, sleep, tcgCacheText, type SandboxMemory } from './lib';
import type { Suite } from './suite';

/** How many clones run side by side. */
export const WARM_CLONES = 3;
const SETTLE_MS = 15_000;

/** The mean of each part over several sandboxes' figures. */
export function meanMemory(all: SandboxMemory[]): SandboxMemory {
  const avg = (f: (m: SandboxMemory) => number) => all.reduce((s, m) => s + f(m), 0) / Math.max(1, all.length);
  const q = all.map((m) => m.qemu).filter((s): s is NonNullable<SandboxMemory['qemu']> => s !== null);
  const avgQ = (k: keyof NonNullable<SandboxMemory['qemu']>) => q.reduce((s, x) => s + x[k], 0) / Math.max(1, q.length);
  return {
    qemu: q.length
      ? {
          guestRamMiB: avgQ('guestRamMiB'),
          guestRamAnonMiB: avgQ('guestRamAnonMiB'),
          guestRamFileMiB: avgQ('guestRamFileMiB'),
          tcgCacheMiB: avgQ('tcgCacheMiB'),
          kernelFilesMiB: avgQ('kernelFilesMiB'),
          fileMiB: avgQ('fileMiB'),
          otherMiB: avgQ('otherMiB'),
          totalMiB: avgQ('totalMiB'),
        }
      : null,
    passtMiB: avg((m) => m.passtMiB),
    virtiofsdMiB: avg((m) => m.virtiofsdMiB),
    covedShareMiB: avg((m) => m.covedShareMiB),
    totalMiB: avg((m) => m.totalMiB),
  };
}

export async function memWarmGroup(suite: Suite): Promise<void> {
  if (!suite.want('mem.idle.warm')) return;
  const names = Array.from({ length: WARM_CLONES }, (_, i) => `mw${i}`);
  // The first of them makes the image's template when there is none yet (about one cold boot).
  for (const name of names) {
    if (suite.sandboxes.has(name)) await suite.rm(name);
    const ms = await suite.up(name, suite.workspace(name), '9p');
    log(`mem.idle.warm: cove up ${name} + docker version in ${(ms / 1000).toFixed(1)} s`);
  }
  const listed = await listSandboxes();
  const notClones = listed.filter((s) => names.includes(s.name) && s.bootKind !== 'template');
  if (notClones.length) throw new Error(`mem.idle.warm: ${notClones.map((s) => `${s.name} came up ${s.bootKind}`).join(', ')}, not restored from the template`);
  await sleep(SETTLE_MS);
  const running = runningSandboxes(listed);
  const covedPid = readPid(path.join(HOME, 'coved.pid'));
  const per = names.map((n) => sandboxMemory(path.join(HOME, 'vms', n), VM_MEMORY_MIB, covedPid, running));
  const ramFile = guestRamFile(readPid(path.join(HOME, 'vms', names[0], 'qemu.pid')), VM_MEMORY_MIB);
  const mappers = ramFile ? mappersOf(ramFile).length : 0;
  const mean = meanMemory(per);
  suite.profile['mem.idle.warm'] = { per, mean, running, ramFile, mappers };
  for (const name of names) await suite.rm(name);
  const bare = suite.bare.pssMiB;
  suite.add(
    makeRow({
      id: 'mem.idle.warm',
      what: `host memory (PSS) per idle docker-ready sandbox as \`cove up\` makes it (a clone of the template, 9p), ${WARM_CLONES} clones running side by side: qemu + passt + its share of coved`,
      unit: 'MiB',
      better: 'lower',
      figure: per.map((m) => m.totalMiB),
      baselineWhat: bare.length ? 'the bare-limit VM (cold boot, qemu + virtiofsd), idle after /_ping' : 'none (the bare limit is measured by the mem.idle row)',
      baseline: bare.length ? bare : null,
      goal: (r) => ({ text: '≤ 250 MiB', met: r.figure.median <= 250 }),
      note:
        `mean of the ${WARM_CLONES} clones: ${sandboxText(mean)} MiB. ` +
        `The template's RAM file pages (guest RAM file) are page cache mapped by ${mappers} process(es) at the time (${WARM_CLONES} from this row; others are other clones of the same template), and PSS divides each page among those that map it; ` +
        `guest RAM anon is what each clone wrote since its restore; coved's PSS is divided by the ${running} running sandbox(es). ` +
        `Measured ${SETTLE_MS / 1000} s after the last clone answered \`docker version\`; guest has ${VM_MEMORY_MIB} MiB; TCG cache: ${tcgCacheText()}`,
    }),
  );
}
