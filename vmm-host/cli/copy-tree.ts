// `cove cp` done as `docker cp` does it, against a guest that may be hostile (docs/security.md):
// - symbolic links are copied as links, on both sides, and never followed or written through;
// - a name the guest returns is used only if it is one plain path component (no `/`, `.`, `..`, NUL);
// - a tree deeper, wider or bigger than the limits stops with an error that names the path;
// - a file is written under a temporary name and renamed into place only when it is complete;
//   host to guest, the content of a large one may go by a ContentWriter (`cove cp` runs `cat` on an
//   exec stream) from the descriptor opened here, while SFTP still makes, sets and renames the file.
//
// On the host every file, folder and link is made relative to an open folder descriptor with
// no-follow semantics: node has no openat(2), so `/proc/self/fd/<fd>/<name>` stands in for it (the
// kernel resolves the descriptor itself, then the one component). A guest that swaps a folder of the
// shared workspace for a symbolic link mid-copy therefore cannot redirect a write (or, host to
// guest, a read) outside the tree being copied.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SFTPWrapper, Stats } from 'ssh2';
import { escapeGuestText } from '../../contract/escape';

export interface CopyLimits {
  /** Folder levels below the one named. */
  maxDepth: number;
  /** Files, folders and links in all. */
  maxEntries: number;
  /** Bytes of file content in all. */
  maxBytes: number;
}

export const DEFAULT_COPY_LIMITS: CopyLimits = { maxDepth: 64, maxEntries: 200_000, maxBytes: 64 * 1024 ** 3 };

/** The limits, with `COVE_CP_MAX_DEPTH`, `COVE_CP_MAX_ENTRIES` and `COVE_CP_MAX_BYTES` read over the defaults. */
export function copyLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): CopyLimits {
  const read = (key: string, fallback: number): number => {
    const text = env[key];
    if (text === undefined || text === '') return fallback;
    if (!/^\d+$/.test(text) || Number(text) <= 0) throw new CopyError(`${key} must be a positive whole number, not ${JSON.stringify(text)}`);
    return Number(text);
  };
  return {
    maxDepth: read('COVE_CP_MAX_DEPTH', DEFAULT_COPY_LIMITS.maxDepth),
    maxEntries: read('COVE_CP_MAX_ENTRIES', DEFAULT_COPY_LIMITS.maxEntries),
    maxBytes: read('COVE_CP_MAX_BYTES', DEFAULT_COPY_LIMITS.maxBytes),
  };
}

/** A copy that stopped; the message names the path it stopped on. */
export class CopyError extends Error {
  override name = 'CopyError';
}

export function isCopyError(e: unknown): e is CopyError {
  return e instanceof CopyError;
}

/** Reports a file that was skipped (a socket, a device) and why. */
export type CopyNote = (msg: string) => void;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** Below ssh2's largest read for a server that is not OpenSSH (34000 bytes less its overhead). */
const CHUNK = 31 * 1024;
/** Reads or writes in flight per file. */
const WINDOW = 32;
const PATH_MAX = 4096;

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY, O_NONBLOCK } = fs.constants;

/** The path that names `name` inside the folder open as `dirFd`, without re-resolving the folder. */
export const at = (dirFd: number, name: string): string => `/proc/self/fd/${dirFd}/${name}`;
export const tempName = (): string => `.cove-cp-${randomBytes(6).toString('hex')}.tmp`;
export const shown = (p: string): string => JSON.stringify(escapeGuestText(p));

/** Throws unless `name` is one plain path component: not empty, `.` or `..`, and free of `/` and NUL. */
export function checkGuestName(name: string, where: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || Buffer.byteLength(name) > 255) {
    throw new CopyError(
      `the guest listed the name ${shown(name)} in ${shown(where)}; only a single plain path component is accepted (no "/", ".", ".." or NUL, at most 255 bytes), so the copy stopped there`,
    );
  }
}

/**
 * Pending SFTP requests of one session, failed together when the session ends: ssh2 drops the
 * callbacks of requests in flight when the connection dies (a guest that sends an oversized or
 * malformed packet), and a copy must then fail, not wait forever.
 */
const pendingOf = new WeakMap<SFTPWrapper, { rejecters: Set<(e: Error) => void>; ended: Error | null }>();

function guard(sftp: SFTPWrapper): { rejecters: Set<(e: Error) => void>; ended: Error | null } {
  let g = pendingOf.get(sftp);
  if (!g) {
    const state = { rejecters: new Set<(e: Error) => void>(), ended: null as Error | null };
    const end = (why: string) => {
      state.ended ??= new CopyError(`the guest's SFTP session ended (${escapeGuestText(why)}); the copy stopped`);
      const err = state.ended;
      for (const r of state.rejecters) r(err);
      state.rejecters.clear();
    };
    sftp.on('error', (e: Error) => end(e.message));
    sftp.on('close', () => end('closed'));
    sftp.on('end', () => end('closed'));
    pendingOf.set(sftp, state);
    g = state;
  }
  return g;
}

/** One SFTP request as a promise that also fails when the session ends. */
function call<T>(sftp: SFTPWrapper, fn: (cb: (err: Error | null | undefined, v: T) => void) => void): Promise<T> {
  const g = guard(sftp);
  return new Promise<T>((resolve, reject) => {
    if (g.ended) return reject(g.ended);
    g.rejecters.add(reject);
    fn((err, v) => {
      g.rejecters.delete(reject);
      if (err) reject(err);
      else resolve(v);
    });
  });
}
const callVoid = (sftp: SFTPWrapper, fn: (cb: (err?: Error | null) => void) => void) => call<undefined>(sftp, (cb) => fn((err) => cb(err, undefined)));

/** The SFTP status code of an error from ssh2, if it has one. */
const sftpCode = (e: unknown): number | undefined => (e as { code?: unknown }).code as number | undefined;
const SFTP_EOF = 1;
const SFTP_NO_SUCH_FILE = 2;

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;
const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** What is spent so far against the limits. */
export class Budget {
  entries = 0;
  bytes = 0;
  constructor(readonly limits: CopyLimits) {}

  entry(where: string, depth: number): void {
    if (depth > this.limits.maxDepth) {
      throw new CopyError(`${shown(where)} is more than ${this.limits.maxDepth} folders deep (a loop?); the copy stopped there (COVE_CP_MAX_DEPTH raises the limit)`);
    }
    if (++this.entries > this.limits.maxEntries) {
      throw new CopyError(`the tree holds more than ${this.limits.maxEntries} entries; the copy stopped at ${shown(where)} (COVE_CP_MAX_ENTRIES raises the limit)`);
    }
  }

  addBytes(n: number, where: string): void {
    this.bytes += n;
    if (this.bytes > this.limits.maxBytes) {
      throw new CopyError(`the copy is larger than ${this.limits.maxBytes} bytes; it stopped in ${shown(where)}, which was not kept (COVE_CP_MAX_BYTES raises the limit)`);
    }
  }
}

/** Wraps an error from one step with the path it failed on, unless it already is a CopyError. */
function failedOn(e: unknown, what: string, where: string): CopyError {
  if (e instanceof CopyError) return e;
  return new CopyError(`${what} ${shown(where)} failed: ${escapeGuestText(messageOf(e))}`);
}

/** Opens the host folder `name` inside `dirFd`, refusing a symbolic link or anything not a folder. */
function openDirAt(dirFd: number, name: string, where: string): number {
  try {
    return fs.openSync(at(dirFd, name), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (e) {
    const code = errnoOf(e);
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      throw new CopyError(`${shown(where)} already exists on the host and is not a folder (a symbolic link is never written through); move it away and copy again`);
    }
    throw failedOn(e, 'opening', where);
  }
}

/** Moves the finished temporary entry over `name`; a folder in the way is an error, not replaced. */
export function placeAt(dirFd: number, temp: string, name: string, where: string): void {
  try {
    fs.renameSync(at(dirFd, temp), at(dirFd, name));
  } catch (e) {
    fs.rmSync(at(dirFd, temp), { force: true });
    const code = errnoOf(e);
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') {
      throw new CopyError(`${shown(where)} is a folder on the host, so the guest's file or link cannot replace it; move it away and copy again`);
    }
    throw failedOn(e, 'writing', where);
  }
}

function typeOf(mode: number): 'dir' | 'file' | 'link' | 'other' {
  const t = mode & S_IFMT;
  return t === S_IFDIR ? 'dir' : t === S_IFREG ? 'file' : t === S_IFLNK ? 'link' : 'other';
}

// ---- guest → host ------------------------------------------------------------------------------

interface GuestEntry {
  name: string;
  attrs: { mode: number; size?: number; atime?: number; mtime?: number };
}

/** Lists one guest folder, one READDIR batch at a time, checking every name and the entry limit. */
async function listGuestDir(sftp: SFTPWrapper, remote: string, budget: Budget, depth: number): Promise<GuestEntry[]> {
  const handle = await call<Buffer>(sftp, (cb) => sftp.opendir(remote, cb)).catch((e: unknown) => {
    throw failedOn(e, 'listing the guest folder', remote);
  });
  const out: GuestEntry[] = [];
  try {
    for (;;) {
      const batch = await call<Array<{ filename: string; attrs: Partial<Stats> }>>(sftp, (cb) => sftp.readdir(handle, cb)).catch((e: unknown) => {
        if (sftpCode(e) === SFTP_EOF) return null;
        throw failedOn(e, 'listing the guest folder', remote);
      });
      if (batch === null) break;
      // An empty batch that is not EOF would repeat forever.
      if (batch.length === 0) break;
      for (const e of batch) {
        if (e.filename === '.' || e.filename === '..') continue;
        checkGuestName(e.filename, remote);
        const where = path.posix.join(remote, e.filename);
        budget.entry(where, depth);
        let mode = e.attrs.mode;
        if (typeof mode !== 'number') {
          mode = (await call<Stats>(sftp, (cb) => sftp.lstat(where, cb)).catch((err: unknown) => {
            throw failedOn(err, 'reading the guest entry', where);
          })).mode;
        }
        out.push({ name: e.filename, attrs: { mode, size: e.attrs.size, atime: e.attrs.atime, mtime: e.attrs.mtime } });
      }
    }
  } finally {
    await callVoid(sftp, (cb) => sftp.close(handle, cb)).catch(() => undefined);
  }
  return out;
}

/** Reads a guest file into the host descriptor `fd` with a few reads in flight; returns its size. */
async function pullFile(sftp: SFTPWrapper, handle: Buffer, fd: number, budget: Budget, where: string): Promise<number> {
  let next = 0;
  let eofAt = Number.POSITIVE_INFINITY;
  let end = 0;
  const retries: Array<{ off: number; len: number }> = [];
  const worker = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      let range = retries.shift();
      if (!range) {
        if (next >= eofAt) return;
        range = { off: next, len: CHUNK };
        next += CHUNK;
      }
      if (range.off >= eofAt) continue;
      const { off, len } = range;
      const nb = await call<number>(sftp, (cb) => sftp.read(handle, buf, 0, len, off, (err, n) => (err && sftpCode(err) !== SFTP_EOF ? cb(err, 0) : cb(null, err ? 0 : n))));
      if (nb === 0) {
        eofAt = Math.min(eofAt, off);
        continue;
      }
      budget.addBytes(nb, where);
      fs.writeSync(fd, buf, 0, nb, off);
      end = Math.max(end, off + nb);
      // A short read is not the end of the file: ask again for the rest of the range.
      if (nb < len) retries.push({ off: off + nb, len: len - nb });
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, () => worker()));
  // Data the guest sent past the end it reported later is not part of the file.
  const size = Math.min(end, eofAt);
  if (end > size) fs.ftruncateSync(fd, size);
  return size;
}

async function getEntry(sftp: SFTPWrapper, remote: string, attrs: GuestEntry['attrs'], dirFd: number, name: string, local: string, budget: Budget, depth: number, note: CopyNote): Promise<void> {
  switch (typeOf(attrs.mode)) {
    case 'link': {
      const target = await call<string>(sftp, (cb) => sftp.readlink(remote, cb)).catch((e: unknown) => {
        throw failedOn(e, 'reading the guest link', remote);
      });
      if (target === '' || target.includes('\0') || Buffer.byteLength(target) >= PATH_MAX) {
        throw new CopyError(`the guest link ${shown(remote)} has a target no host link can hold (${shown(target.slice(0, 80))}); the copy stopped there`);
      }
      const temp = tempName();
      try {
        fs.symlinkSync(target, at(dirFd, temp));
      } catch (e) {
        throw failedOn(e, 'making the link', local);
      }
      placeAt(dirFd, temp, name, local);
      return;
    }
    case 'dir': {
      try {
        fs.mkdirSync(at(dirFd, name), { mode: 0o700 });
      } catch (e) {
        if (errnoOf(e) !== 'EEXIST') throw failedOn(e, 'making the folder', local);
      }
      const fd = openDirAt(dirFd, name, local);
      try {
        const entries = await listGuestDir(sftp, remote, budget, depth + 1);
        for (const e of entries) {
          await getEntry(sftp, path.posix.join(remote, e.name), e.attrs, fd, e.name, path.join(local, e.name), budget, depth + 1, note);
        }
        fs.fchmodSync(fd, attrs.mode & 0o777);
      } finally {
        fs.closeSync(fd);
      }
      return;
    }
    case 'file': {
      const handle = await call<Buffer>(sftp, (cb) => sftp.open(remote, 'r', cb)).catch((e: unknown) => {
        throw failedOn(e, 'opening the guest file', remote);
      });
      const temp = tempName();
      let fd: number;
      try {
        fd = fs.openSync(at(dirFd, temp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      } catch (e) {
        await callVoid(sftp, (cb) => sftp.close(handle, cb)).catch(() => undefined);
        throw failedOn(e, 'writing', local);
      }
      try {
        await pullFile(sftp, handle, fd, budget, remote).catch((e: unknown) => {
          throw failedOn(e, 'reading the guest file', remote);
        });
        // Permission bits only: a setuid or setgid bit from the guest is not carried to the host.
        fs.fchmodSync(fd, attrs.mode & 0o777);
        if (typeof attrs.mtime === 'number') fs.futimesSync(fd, attrs.atime ?? attrs.mtime, attrs.mtime);
      } catch (e) {
        fs.closeSync(fd);
        fs.rmSync(at(dirFd, temp), { force: true });
        throw e;
      } finally {
        await callVoid(sftp, (cb) => sftp.close(handle, cb)).catch(() => undefined);
      }
      fs.closeSync(fd);
      placeAt(dirFd, temp, name, local);
      return;
    }
    case 'other':
      note(`skipped ${shown(remote)}: not a file, folder or link (a socket, pipe or device)`);
      return;
  }
}

/**
 * Copies the guest path `remote` to the host path `local` (which names the new entry itself; its
 * parent folder must exist). A link at `remote` is copied as a link.
 */
export async function getTree(sftp: SFTPWrapper, remote: string, local: string, limits: CopyLimits, note: CopyNote): Promise<void> {
  const budget = new Budget(limits);
  const st = await call<Stats>(sftp, (cb) => sftp.lstat(remote, cb)).catch((e: unknown) => {
    if (sftpCode(e) === SFTP_NO_SUCH_FILE) throw new CopyError(`${shown(remote)} does not exist in the guest`);
    throw failedOn(e, 'reading the guest path', remote);
  });
  const parent = path.dirname(path.resolve(local));
  const name = path.basename(path.resolve(local));
  let dirFd: number;
  try {
    dirFd = fs.openSync(parent, O_RDONLY | O_DIRECTORY);
  } catch (e) {
    throw failedOn(e, 'opening the host folder', parent);
  }
  try {
    budget.entry(remote, 0);
    await getEntry(sftp, remote, { mode: st.mode, size: st.size, atime: st.atime, mtime: st.mtime }, dirFd, name, local, budget, 0, note);
  } finally {
    fs.closeSync(dirFd);
  }
}

// ---- host → guest ------------------------------------------------------------------------------

/** The guest entry's type at `remote`, or null when nothing is there. */
async function guestType(sftp: SFTPWrapper, remote: string): Promise<'dir' | 'file' | 'link' | 'other' | null> {
  return call<Stats>(sftp, (cb) => sftp.lstat(remote, cb)).then(
    (s) => typeOf(s.mode),
    (e: unknown) => {
      if (sftpCode(e) === SFTP_NO_SUCH_FILE) return null;
      throw failedOn(e, 'reading the guest path', remote);
    },
  );
}

/** Makes room at the guest path `remote` for a file or link: removes what is there unless it is a folder. */
async function clearGuestPath(sftp: SFTPWrapper, remote: string): Promise<void> {
  const t = await guestType(sftp, remote);
  if (t === null) return;
  if (t === 'dir') throw new CopyError(`${shown(remote)} is a folder in the guest, so a file or link cannot replace it; move it away and copy again`);
  await callVoid(sftp, (cb) => sftp.unlink(remote, cb)).catch((e: unknown) => {
    throw failedOn(e, 'replacing the guest file', remote);
  });
}

/**
 * Writes a host file's content (`size` bytes from the descriptor `fd`) to the guest file `guestPath`
 * by a faster route than SFTP; resolves false, having written nothing, when that route is not
 * available (SFTP then writes it). `cove cp` passes one that runs `cat` over an exec stream.
 */
export type ContentWriter = (fd: number, size: number, guestPath: string) => Promise<boolean>;

/** Files this large or larger go through the ContentWriter, when there is one. */
export const WRITER_MIN_BYTES = 1024 * 1024;

/** Writes the host descriptor `fd` to the guest handle with a few writes in flight. */
async function pushFile(sftp: SFTPWrapper, fd: number, handle: Buffer, size: number, budget: Budget | null, where: string): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(CHUNK);
    while (next < size) {
      const off = next;
      next += CHUNK;
      const n = fs.readSync(fd, buf, 0, Math.min(CHUNK, size - off), off);
      if (n === 0) return;
      budget?.addBytes(n, where);
      await callVoid(sftp, (cb) => sftp.write(handle, buf, 0, n, off, cb));
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, () => worker()));
}

async function putEntry(sftp: SFTPWrapper, dirFd: number, name: string, local: string, remote: string, budget: Budget, depth: number, note: CopyNote, writer: ContentWriter | null): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(at(dirFd, name));
  } catch (e) {
    throw failedOn(e, 'reading', local);
  }
  if (st.isSymbolicLink()) {
    let target: string;
    try {
      target = fs.readlinkSync(at(dirFd, name));
    } catch (e) {
      throw failedOn(e, 'reading the link', local);
    }
    await clearGuestPath(sftp, remote);
    await callVoid(sftp, (cb) => sftp.symlink(target, remote, cb)).catch((e: unknown) => {
      throw failedOn(e, 'making the guest link', remote);
    });
    return;
  }
  if (st.isDirectory()) {
    const fd = openDirAt(dirFd, name, local);
    try {
      const t = await guestType(sftp, remote);
      if (t === null) {
        await callVoid(sftp, (cb) => sftp.mkdir(remote, { mode: 0o700 }, cb)).catch((e: unknown) => {
          throw failedOn(e, 'making the guest folder', remote);
        });
      } else if (t !== 'dir') {
        throw new CopyError(`${shown(remote)} exists in the guest and is not a folder (a link is never written through); move it away and copy again`);
      }
      const names = fs.readdirSync(`/proc/self/fd/${fd}`);
      for (const child of names) {
        const where = path.join(local, child);
        budget.entry(where, depth + 1);
        await putEntry(sftp, fd, child, where, path.posix.join(remote, child), budget, depth + 1, note, writer);
      }
      await callVoid(sftp, (cb) => sftp.chmod(remote, st.mode & 0o777, cb)).catch(() => undefined);
    } finally {
      fs.closeSync(fd);
    }
    return;
  }
  if (!st.isFile()) {
    note(`skipped ${shown(local)}: not a file, folder or link (a socket, pipe or device)`);
    return;
  }
  let fd: number;
  try {
    // No-follow and non-blocking: what was a file at lstat may have been swapped for a link or a
    // pipe since; fstat below checks what was opened.
    fd = fs.openSync(at(dirFd, name), O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    throw failedOn(e, 'opening', local);
  }
  try {
    const fst = fs.fstatSync(fd);
    if (!fst.isFile()) throw new CopyError(`${shown(local)} changed while it was copied (it is no longer a file); copy again`);
    const temp = path.posix.join(path.posix.dirname(remote), tempName());
    const handle = await call<Buffer>(sftp, (cb) => sftp.open(temp, 'wx', { mode: 0o600 }, cb)).catch((e: unknown) => {
      throw failedOn(e, 'writing the guest file', remote);
    });
    try {
      const viaWriter = writer !== null && fst.size >= WRITER_MIN_BYTES;
      // Counted once, before the writer, so a declined write is not counted again by pushFile.
      if (viaWriter) budget.addBytes(fst.size, local);
      const written = viaWriter && (await writer(fd, fst.size, temp));
      if (!written) await pushFile(sftp, fd, handle, fst.size, viaWriter ? null : budget, local);
      await callVoid(sftp, (cb) => sftp.fchmod(handle, fst.mode & 0o777, cb));
      await callVoid(sftp, (cb) => sftp.futimes(handle, fst.atime, fst.mtime, cb)).catch(() => undefined);
      await callVoid(sftp, (cb) => sftp.close(handle, cb));
    } catch (e) {
      await callVoid(sftp, (cb) => sftp.close(handle, cb)).catch(() => undefined);
      await callVoid(sftp, (cb) => sftp.unlink(temp, cb)).catch(() => undefined);
      throw failedOn(e, 'writing the guest file', remote);
    }
    try {
      await clearGuestPath(sftp, remote);
      await callVoid(sftp, (cb) => sftp.rename(temp, remote, cb)).catch((e: unknown) => {
        throw failedOn(e, 'writing the guest file', remote);
      });
    } catch (e) {
      await callVoid(sftp, (cb) => sftp.unlink(temp, cb)).catch(() => undefined);
      throw e;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Copies the host path `local` to the guest path `remote` (which names the new entry itself). A link
 * at `local` is copied as a link; nothing on the host is followed.
 */
export async function putTree(sftp: SFTPWrapper, local: string, remote: string, limits: CopyLimits, note: CopyNote, writer: ContentWriter | null = null): Promise<void> {
  const budget = new Budget(limits);
  const abs = path.resolve(local);
  let dirFd: number;
  try {
    dirFd = fs.openSync(path.dirname(abs), O_RDONLY | O_DIRECTORY);
  } catch (e) {
    throw failedOn(e, 'opening the host folder', path.dirname(abs));
  }
  try {
    budget.entry(local, 0);
    await putEntry(sftp, dirFd, path.basename(abs), local, remote, budget, 0, note, writer);
  } finally {
    fs.closeSync(dirFd);
  }
}
