// The size of qemu's TCG translation cache (`-accel tcg,tb-size=N`, MiB). QEMU 7.2's default is
// 1 GiB, and a guest that boots dockerd translates enough code to fill most of it: the cache is
// never shrunk, so it stays resident as the largest part of an idle sandbox's memory. A smaller
// cache saves that memory, but it is flushed more often, and QEMU 7.2 now and then corrupts a vCPU's
// state at a flush under this load: the guest kernel oopses with impossible EFLAGS (docs/memory.md,
// "The translation cache"). QEMU 10.0.2 ran 2.6 times the flushes that crashed 7.2 without it. So
// the default is a 256 MiB bound on QEMU 10 and later (128 MiB, the first choice, made QEMU 10.0.2
// flush ~2 times per `docker run` and take twice the CPU), and QEMU's own size before; a size stays
// a setting. Under KVM there is no translation cache and nothing is passed.
import { DriverError } from './errors';
import { parseVersion } from './qemu-features';

/** MiB of translation cache per VM under TCG on a QEMU before 10 unless COVE_TCG_TB_MIB says otherwise; null: QEMU's own default. */
export const DEFAULT_TCG_CACHE_MIB: number | null = null;
/** The default on QEMU 10 and later: the smallest size QEMU 10.0.2's sweep in docs/memory.md ran at QEMU's own speed. */
export const BOUNDED_TCG_CACHE_MIB = 256;
/** The first QEMU whose flushes are not known to crash the guest (10.0.2 measured; 8.x and 9.x not). */
export const BOUNDED_CACHE_SINCE_MAJOR = 10;

/** The default size for a QEMU that prints `qemuVersionLine` (`qemu-system-x86_64 --version`). */
export function defaultTcgCacheMiB(qemuVersionLine: string): number | null {
  const v = parseVersion(qemuVersionLine);
  return v && v[0] >= BOUNDED_CACHE_SINCE_MAJOR ? BOUNDED_TCG_CACHE_MIB : DEFAULT_TCG_CACHE_MIB;
}

/** The range COVE_TCG_TB_MIB accepts; 0 means QEMU's own default (1 GiB on QEMU 7.2). */
export const TCG_CACHE_LIMITS = { minMiB: 8, maxMiB: 4096 } as const;

/**
 * The translation cache size for a VM under TCG: COVE_TCG_TB_MIB when set (0: QEMU's default,
 * returned as null), else the default for the QEMU that prints `qemuVersionLine`.
 */
export function tcgCacheMiB(env: NodeJS.ProcessEnv = process.env, qemuVersionLine = ''): number | null {
  const text = env.COVE_TCG_TB_MIB?.trim();
  if (!text) return defaultTcgCacheMiB(qemuVersionLine);
  const n = Number(text);
  if (n === 0) return null;
  if (!Number.isInteger(n) || n < TCG_CACHE_LIMITS.minMiB || n > TCG_CACHE_LIMITS.maxMiB) {
    throw new DriverError(
      `COVE_TCG_TB_MIB=${text} is not a translation cache size`,
      `set it to a whole number of MiB from ${TCG_CACHE_LIMITS.minMiB} to ${TCG_CACHE_LIMITS.maxMiB}, or 0 or unset for QEMU's own default (smaller caches are flushed more often, and QEMU 7.2 can crash the guest at a flush)`,
    );
  }
  return n;
}

/** `cove doctor`'s word on the cache: what size runs, and whether this QEMU is known to crash at its flushes. */
export function tcgCacheCheck(qemuVersionLine: string, env: NodeJS.ProcessEnv = process.env): { ok: boolean; detail: string; hint?: string } {
  let size: number | null;
  try {
    size = tcgCacheMiB(env, qemuVersionLine);
  } catch (e) {
    const err = e as DriverError;
    return { ok: false, detail: err.message, hint: err.hint };
  }
  const v = parseVersion(qemuVersionLine);
  if (size === null) {
    const upgrade = v && v[0] < BOUNDED_CACHE_SINCE_MAJOR ? `; on QEMU >= ${BOUNDED_CACHE_SINCE_MAJOR} it is bounded to ${BOUNDED_TCG_CACHE_MIB} MiB, which saves up to 768 MiB per sandbox that has worked` : '';
    return { ok: true, detail: `QEMU's own size (1 GiB on QEMU 7.2): it fills as the guest works and stays with the sandbox${upgrade}` };
  }
  if (v && v[0] < BOUNDED_CACHE_SINCE_MAJOR) {
    return {
      ok: false,
      detail: `COVE_TCG_TB_MIB=${size} with QEMU ${v[0]}.${v[1]}: a bounded cache is flushed more often, and at its flushes QEMU 7.2 was seen to corrupt the guest's CPU state (the guest kernel crashes); QEMU 10.0.2 ran 2,601 flushes without it`,
      hint: 'unset COVE_TCG_TB_MIB, or use QEMU >= 10 (bookworm-backports has 10.0.2)',
    };
  }
  const why = env.COVE_TCG_TB_MIB?.trim() ? 'COVE_TCG_TB_MIB' : `the default on QEMU >= ${BOUNDED_CACHE_SINCE_MAJOR}`;
  return { ok: true, detail: `${size} MiB per sandbox (${why})` };
}
