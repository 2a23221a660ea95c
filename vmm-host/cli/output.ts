// How the CLI speaks: errors with their hint on stderr, tables and JSON on stdout.
import { isCoveError, messageOf } from '../../contract/errors';
import { asCoveError } from '../../contract/client';
import { escapeGuestLines } from '../../contract/escape';

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Prints an error the way every command does, and returns the exit code to use. */
export function reportError(e: unknown): number {
  const err = asCoveError(e);
  if (err instanceof UsageError) {
    // A message that already names the help to read needs no second pointer.
    process.stderr.write(`cove: ${err.message}\n${/--help`/.test(err.message) ? '' : 'Run `cove help` for usage.\n'}`);
    return 2;
  }
  // coved's messages can carry what a guest said (its console, the agent's answers): escaped, so a
  // hostile guest cannot drive the user's terminal.
  if (isCoveError(err)) {
    process.stderr.write(`cove: ${escapeGuestLines(err.message)}\n`);
    if (err.hint) process.stderr.write(`hint: ${escapeGuestLines(err.hint)}\n`);
    if (err.consoleTail) process.stderr.write(`--- console (last lines) ---\n${escapeGuestLines(err.consoleTail)}\n---\n`);
    return 1;
  }
  process.stderr.write(`cove: ${escapeGuestLines(messageOf(err))}\n`);
  return 1;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** A plain aligned table: the first row is the header. */
export function printTable(rows: string[][]): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const r of rows) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('   ') + '\n');
}

/** Parses sizes such as 2G, 2048M, 512MiB, 1.5GiB into MiB; a bare number is in `bareUnit`. */
export function parseSizeMiB(text: string, bareUnit: 'M' | 'G'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new UsageError(`cannot read the size ${JSON.stringify(text)}: use a number with M or G, e.g. 2G or 512M`);
  const n = Number(m[1]);
  const unit = (m[2] || bareUnit).toUpperCase();
  const mib = unit === 'K' ? n / 1024 : unit === 'M' ? n : unit === 'G' ? n * 1024 : n * 1024 * 1024;
  if (!Number.isFinite(mib) || mib <= 0) throw new UsageError(`the size ${JSON.stringify(text)} is not a positive size`);
  return Math.round(mib);
}

export function parseIntArg(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`${what} must be a whole number, not ${JSON.stringify(text)}`);
  return Number(text);
}

/** Reads `-p HOST:GUEST` (or `-p HOST` where only the host port is needed). */
export function parsePortSpec(spec: string | undefined, needGuest: boolean): { hostPort: number; guestPort: number } {
  if (!spec) throw new UsageError(needGuest ? 'missing -p HOST:GUEST' : 'missing -p HOST');
  const m = needGuest ? /^(\d{1,5}):(\d{1,5})$/.exec(spec) : /^(\d{1,5})(?::\d{1,5})?$/.exec(spec);
  if (!m) throw new UsageError(`cannot read the port ${JSON.stringify(spec)}: use ${needGuest ? 'HOST:GUEST, e.g. 8080:80' : 'HOST'}`);
  const hostPort = Number(m[1]);
  const guestPort = needGuest ? Number(m[2]) : 0;
  for (const p of needGuest ? [hostPort, guestPort] : [hostPort]) if (p < 1 || p > 65535) throw new UsageError(`port ${p} is out of range 1-65535`);
  return { hostPort, guestPort };
}
