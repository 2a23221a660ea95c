// Saving and restoring a QEMU VM through QMP migration to and from a file (QEMU 7.2 has no `file:`
// URI, so `exec:cat`). Facts this follows are in docs/warm-start.md: a VM is saved while paused
// and restores paused; guest RAM that is a shared memory file is left out with the
// `x-ignore-shared` capability, which the restoring side must set as well.
import * as fs from 'node:fs';
import { waitFor } from '../../contract/wait';
import { DriverError } from './errors';
import { qmpCommand } from './qmp';

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  blocked?: boolean;
  'blocked-reasons'?: string[];
}

/** A path for `sh -c`: single-quoted. */
function shQuote(p: string): string {
  return `'${p.replace(/'/g, `'\\''`)}'`;
}

async function setIgnoreShared(qmp: string, on: boolean): Promise<void> {
  await qmpCommand(qmp, 'migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: on }] });
}

async function waitMigration(qmp: string, what: string, timeoutMs: number): Promise<void> {
  await waitFor(
    what,
    timeoutMs,
    async () => {
      const info = (await qmpCommand(qmp, 'query-migrate')) as MigrateInfo;
      if (info.status === 'completed') return true;
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new DriverError(`${what} ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`, 'see qemu.log in the VM folder');
      }
      return false;
    },
    { intervalMs: 20, onError: 'throw', hint: 'qemu may be stuck; it is stopped and the VM booted instead' },
  );
}

/** Why qemu would refuse to save this VM now (a mounted 9p share, a vhost-user-fs device), or none. */
export async function saveBlockers(qmp: string): Promise<string[]> {
  const info = (await qmpCommand(qmp, 'query-migrate')) as MigrateInfo;
  return info['blocked-reasons'] ?? (info.blocked ? ['qemu reports the VM cannot be saved now'] : []);
}

/** Saves a paused VM to `file` (written to `file.tmp`, then renamed); the VM stays paused. */
export async function saveState(qmp: string, file: string, skipSharedMemory: boolean, timeoutMs = 120_000): Promise<{ bytes: number; seconds: number }> {
  const t0 = Date.now();
  const tmp = `${file}.tmp`;
  fs.rmSync(tmp, { force: true });
  const blockers = await saveBlockers(qmp);
  if (blockers.length > 0) throw new DriverError(`the VM cannot be saved now: ${blockers.join('; ')}`, 'it stays as it is');
  await qmpCommand(qmp, 'migrate-set-parameters', { 'max-bandwidth': 10_000_000_000 });
  await setIgnoreShared(qmp, skipSharedMemory);
  await qmpCommand(qmp, 'migrate', { uri: `exec:cat > ${shQuote(tmp)}` });
  try {
    await waitMigration(qmp, `saving the VM to ${file}`, timeoutMs);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  // qemu's -daemonize umask left it group-readable: it holds guest RAM. No fsync: a state cut short
  // by a host crash fails its checksum at restore, and the VM boots instead.
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
  return { bytes: fs.statSync(file).size, seconds: (Date.now() - t0) / 1000 };
}

/** Loads a saved state into a qemu started with `-incoming defer`; the VM is paused afterwards. */
export async function loadState(qmp: string, file: string, skipSharedMemory: boolean, timeoutMs: number): Promise<void> {
  await setIgnoreShared(qmp, skipSharedMemory);
  await qmpCommand(qmp, 'migrate-incoming', { uri: `exec:cat ${shQuote(file)}` });
  await waitMigration(qmp, `loading the saved state ${file}`, timeoutMs);
}
