// The guest's address randomization, as the config says (`aslr`, contract/config-disk.ts): coved
// turns it off only under TCG on a QEMU that translates a program again at every new address
// (vmm-host/driver/guest-aslr.ts). The init writes it to the kernel's sysctl before the services
// start; the agent writes it again at its start and on rebirth, since a clone runs the template's
// kernel with its own config. A config without the field leaves the kernel as it is.
import * as fs from 'node:fs';
import { log } from './log';

export const ASLR_SYSCTL = '/proc/sys/kernel/randomize_va_space';

/** The sysctl's value for a setting: 2 is the kernel's default (stack, mmap, heap and brk randomized), 0 none. */
export const aslrValue = (on: boolean): string => (on ? '2' : '0');

/**
 * Writes the setting to `file`; returns what was written, null when the config says nothing, or
 * an Error when the kernel refused it (the guest keeps working either way, so callers log it).
 */
export function applyAslr(aslr: boolean | undefined, file: string): string | null | Error {
  if (aslr === undefined) return null;
  const value = aslrValue(aslr);
  try {
    fs.writeFileSync(file, `${value}\n`);
    return value;
  } catch (err) {
    return new Error(`cannot set ${file} to ${value}: ${(err as Error).message}`);
  }
}

/** Applies the setting and logs what happened, each line after `context` (e.g. 'rebirth: '). */
export function setAslr(aslr: boolean | undefined, file: string, context = ''): void {
  const result = applyAslr(aslr, file);
  if (result instanceof Error) log(`${context}${result.message}; address randomization stays as it was`);
  else if (result !== null) log(`${context}address randomization: ${file} = ${result}`);
}
