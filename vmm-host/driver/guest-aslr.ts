// Whether the guest kernel randomizes where processes are mapped (`kernel.randomize_va_space`).
// Under TCG, QEMU before 8.0 keys each translated block by the guest's virtual address as well as
// its physical one, so a program mapped at a new random address is translated again on every
// start, though its code pages are the same page cache: a `docker run` on QEMU 7.2 added ~62 MiB
// to the translation cache with randomization and ~13 MiB without, and took ~20 % less time
// (docs/memory.md, "Address randomization under TCG"). QEMU 8.0 and later translate x86 code
// position-independently (CF_PCREL) and reuse the blocks whatever the address. So the guest maps
// without randomization only under TCG on a QEMU before 8.0; everywhere else it keeps the kernel's
// default. COVE_GUEST_ASLR=on|off overrides. This is a hardening of the guest's own processes
// (containers included), not of the VM boundary: docs/security.md says what it costs.
import type { Accel } from '../../contract/protocol';
import { DriverError } from './errors';
import { parseVersion } from './qemu-features';

/** The first QEMU whose x86 TCG reuses a translation at any virtual address (CF_PCREL). */
export const PCREL_SINCE: readonly [number, number] = [8, 0];

/** The setting when COVE_GUEST_ASLR does not say: off only under TCG on a QEMU before 8.0. */
export function defaultGuestAslr(accel: Accel, qemuVersionLine: string): boolean {
  if (accel !== 'tcg') return true;
  const v = parseVersion(qemuVersionLine);
  if (v === null) return true;
  return v[0] > PCREL_SINCE[0] || (v[0] === PCREL_SINCE[0] && v[1] >= PCREL_SINCE[1]);
}

/** COVE_GUEST_ASLR as a setting: true (on), false (off), null (unset); a DriverError for anything else. coved checks it at its start. */
export function guestAslrSetting(env: NodeJS.ProcessEnv = process.env): boolean | null {
  const text = env.COVE_GUEST_ASLR?.trim().toLowerCase();
  if (!text) return null;
  if (text === 'on') return true;
  if (text === 'off') return false;
  throw new DriverError(
    `COVE_GUEST_ASLR=${env.COVE_GUEST_ASLR} is not a setting`,
    'set it to on (the guest randomizes where processes are mapped) or off, or unset it for the default (off only under TCG on QEMU before 8.0)',
  );
}

/** Whether guests started now randomize their address space: COVE_GUEST_ASLR, else the default. */
export function guestAslr(accel: Accel, qemuVersionLine: string, env: NodeJS.ProcessEnv = process.env): boolean {
  return guestAslrSetting(env) ?? defaultGuestAslr(accel, qemuVersionLine);
}

/** `cove doctor`'s word on it. */
export function guestAslrCheck(accel: Accel, qemuVersionLine: string, env: NodeJS.ProcessEnv = process.env): { ok: boolean; detail: string; hint?: string } {
  let on: boolean;
  try {
    on = guestAslr(accel, qemuVersionLine, env);
  } catch (e) {
    const err = e as DriverError;
    return { ok: false, detail: err.message, hint: err.hint };
  }
  const set = env.COVE_GUEST_ASLR?.trim() ? ' (COVE_GUEST_ASLR)' : '';
  if (on) return { ok: true, detail: `on${set}: the guest maps processes at random addresses, as the kernel does by default` };
  const why = set || ` (the default under TCG on QEMU before ${PCREL_SINCE.join('.')}, which translates a program again at every new address)`;
  const keep = set ? '' : `; COVE_GUEST_ASLR=on in coved's environment keeps it, and QEMU >= ${PCREL_SINCE.join('.')} needs neither`;
  return {
    ok: true,
    detail: `off${why}: processes in the guest and its containers are mapped at fixed addresses, so container starts are faster and the translation cache grows ~5x slower${keep}`,
  };
}
