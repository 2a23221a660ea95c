// The Debian mirror: COVE_DEBIAN_MIRROR, else the host's apt configuration (the first non-security
// `debian` entry). Never written into the repository.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MirrorError } from './errors';

export function findDebianMirror(env: NodeJS.ProcessEnv = process.env, aptDir = '/etc/apt'): string {
  const fromEnv = env.COVE_DEBIAN_MIRROR?.trim();
  if (fromEnv) return fromEnv.replace(/\/+$/, '');
  const uris: string[] = [];
  const partsDir = path.join(aptDir, 'sources.list.d');
  let parts: string[] = [];
  try {
    parts = fs.readdirSync(partsDir).sort();
  } catch {
    // No sources.list.d: only sources.list.
  }
  for (const f of parts) {
    const text = safeRead(path.join(partsDir, f));
    if (f.endsWith('.sources')) uris.push(...deb822Uris(text));
    else if (f.endsWith('.list')) uris.push(...oneLineUris(text));
  }
  uris.push(...oneLineUris(safeRead(path.join(aptDir, 'sources.list'))));
  const pick = uris.find((u) => /\/debian\/?$/.test(u) && !/security/.test(u));
  if (!pick) {
    throw new MirrorError(
      `no Debian mirror found in ${aptDir}/sources.list or ${partsDir}/*.sources`,
      null,
      'set COVE_DEBIAN_MIRROR to a Debian mirror URL (the one ending in /debian)',
    );
  }
  return pick.replace(/\/+$/, '');
}

/** URIs of `Types: deb` stanzas in a deb822 .sources file. */
export function deb822Uris(text: string): string[] {
  const out: string[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1].toLowerCase(), m[2]);
    }
    if (!(fields.get('types') ?? '').split(/\s+/).includes('deb')) continue;
    if ((fields.get('enabled') ?? 'yes').toLowerCase() === 'no') continue;
    out.push(...(fields.get('uris') ?? '').split(/\s+/).filter(Boolean));
  }
  return out;
}

/** URIs of `deb [opts] URI suite comp…` lines. */
export function oneLineUris(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Fails fast with a clear error when the mirror does not serve `dists/<suite>/Release`. */
export async function checkMirrorReachable(mirror: string, suite: string, timeoutMs = 20_000): Promise<void> {
  const url = `${mirror}/dists/${suite}/Release`;
  try {
    const res = await fetch(url, { method: 'HEAD', signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) {
      throw new MirrorError(`the Debian mirror ${mirror} answered ${res.status} for ${url}`, mirror,
        `check that ${mirror} is a Debian mirror that carries ${suite}, or set COVE_DEBIAN_MIRROR`);
    }
  } catch (e) {
    if (e instanceof MirrorError) throw e;
    throw new MirrorError(
      `cannot reach the Debian mirror ${mirror} (${url}): ${describeFetchError(e)}`,
      mirror,
      undefined,
      { cause: e },
    );
  }
}

function describeFetchError(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  if ((e as Error).name === 'TimeoutError') return 'no answer in time';
  return cause?.code ?? cause?.message ?? (e as Error).message;
}
