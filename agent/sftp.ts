// The SFTP subsystem (version 3, draft-ietf-secsh-filexfer-02) over ssh2's server primitives:
// enough for `cove cp` both ways and for sftp(1) and VS Code. Relative paths resolve against the
// session's working directory (COVE_CWD, else the user's home).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { utils, type Attributes, type FileEntry, type InputAttributes, type SFTPWrapper } from 'ssh2';
import { errorText, log } from './log';

const { STATUS_CODE, flagsToString } = utils.sftp;
const MAX_READ = 256 * 1024;
const READDIR_BATCH = 128;

interface FileHandle {
  kind: 'file';
  fd: number;
  path: string;
  pending: Set<Promise<unknown>>;
}
interface DirHandle {
  kind: 'dir';
  path: string;
  /** Names not sent yet; read on the first READDIR. */
  names: string[] | null;
  pending: Set<Promise<unknown>>;
}
type Handle = FileHandle | DirHandle;

function attrsOf(st: fs.Stats): Attributes {
  return {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    atime: Math.floor(st.atimeMs / 1000),
    mtime: Math.floor(st.mtimeMs / 1000),
  };
}

type StatusCode = (typeof STATUS_CODE)[keyof typeof STATUS_CODE];

function statusFor(err: unknown): StatusCode {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return STATUS_CODE.NO_SUCH_FILE;
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return STATUS_CODE.PERMISSION_DENIED;
    default:
      return STATUS_CODE.FAILURE;
  }
}

/** The messages OpenSSH's sftp-server sends; clients show them as they are. */
const STATUS_TEXT: Partial<Record<StatusCode, string>> = {
  [STATUS_CODE.NO_SUCH_FILE]: 'No such file',
  [STATUS_CODE.PERMISSION_DENIED]: 'Permission denied',
};

const MODE_CHARS = 'rwxrwxrwx';
function longname(name: string, st: fs.Stats): string {
  let kind = '-';
  if (st.isDirectory()) kind = 'd';
  else if (st.isSymbolicLink()) kind = 'l';
  else if (st.isCharacterDevice()) kind = 'c';
  else if (st.isBlockDevice()) kind = 'b';
  else if (st.isFIFO()) kind = 'p';
  else if (st.isSocket()) kind = 's';
  let perms = '';
  for (let i = 0; i < 9; i++) perms += st.mode & (1 << (8 - i)) ? MODE_CHARS[i] : '-';
  const date = st.mtime.toISOString().slice(0, 16).replace('T', ' ');
  return `${kind}${perms} ${st.nlink} ${st.uid} ${st.gid} ${st.size} ${date} ${name}`;
}

export function serveSftp(sftp: SFTPWrapper, id: string, cwd: string): void {
  const handles = new Map<number, Handle>();
  let nextHandle = 1;
  const resolve = (p: string): string => path.resolve(cwd, p === '' ? '.' : p);

  const newHandle = (h: Handle): Buffer => {
    const n = nextHandle++;
    handles.set(n, h);
    const buf = Buffer.alloc(4);
    buf.writeUInt32BE(n);
    return buf;
  };
  const lookup = (buf: Buffer): [number, Handle | undefined] => {
    if (buf.length !== 4) return [-1, undefined];
    const n = buf.readUInt32BE(0);
    return [n, handles.get(n)];
  };

  /** Runs one request; any thrown error becomes its status. */
  const op = (reqid: number, what: string, fn: () => Promise<void>, handle?: Handle): void => {
    const p = fn().catch((err: unknown) => {
      const code = statusFor(err);
      if (code === STATUS_CODE.FAILURE) log(`${id}: sftp ${what}: ${errorText(err)}`);
      sftp.status(reqid, code, STATUS_TEXT[code] ?? errorText(err));
    });
    if (handle) {
      handle.pending.add(p);
      void p.finally(() => handle.pending.delete(p));
    }
  };
  const ok = (reqid: number): void => {
    sftp.status(reqid, STATUS_CODE.OK);
  };
  const badHandle = (reqid: number): void => {
    sftp.status(reqid, STATUS_CODE.FAILURE, 'invalid handle');
  };

  async function setAttrs(target: string | number, attrs: InputAttributes): Promise<void> {
    const isFd = typeof target === 'number';
    if (attrs.size !== undefined) {
      if (isFd) await new Promise<void>((res, rej) => fs.ftruncate(target, attrs.size, (e) => (e ? rej(e) : res())));
      else await fsp.truncate(target, attrs.size);
    }
    if (attrs.mode !== undefined) {
      const mode = typeof attrs.mode === 'string' ? parseInt(attrs.mode, 8) : attrs.mode & 0o7777;
      if (isFd) await new Promise<void>((res, rej) => fs.fchmod(target, mode, (e) => (e ? rej(e) : res())));
      else await fsp.chmod(target, mode);
    }
    const { uid, gid, atime, mtime } = attrs;
    if (uid !== undefined && gid !== undefined) {
      if (isFd) await new Promise<void>((res, rej) => fs.fchown(target, uid, gid, (e) => (e ? rej(e) : res())));
      else await fsp.chown(target, uid, gid);
    }
    if (atime !== undefined && mtime !== undefined) {
      if (isFd) await new Promise<void>((res, rej) => fs.futimes(target, atime, mtime, (e) => (e ? rej(e) : res())));
      else await fsp.utimes(target, atime, mtime);
    }
  }

  sftp.on('OPEN', (reqid: number, filename: string, flags: number, attrs: Attributes) => {
    op(reqid, 'open', async () => {
      const mode = flagsToString(flags);
      if (!mode) throw Object.assign(new Error(`unsupported open flags ${flags}`), { code: 'EINVAL' });
      const file = resolve(filename);
      const fd = await new Promise<number>((res, rej) =>
        fs.open(file, mode, typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o644, (e, f) => (e ? rej(e) : res(f))),
      );
      sftp.handle(reqid, newHandle({ kind: 'file', fd, path: file, pending: new Set() }));
    });
  });

  sftp.on('READ', (reqid: number, handle: Buffer, offset: number, length: number) => {
    const [, h] = lookup(handle);
    if (!h || h.kind !== 'file') return badHandle(reqid);
    op(reqid, 'read', async () => {
      const buf = Buffer.allocUnsafe(Math.min(length, MAX_READ));
      const n = await new Promise<number>((res, rej) => fs.read(h.fd, buf, 0, buf.length, offset, (e, r) => (e ? rej(e) : res(r))));
      if (n === 0) sftp.status(reqid, STATUS_CODE.EOF);
      else sftp.data(reqid, buf.subarray(0, n));
    }, h);
  });

  sftp.on('WRITE', (reqid: number, handle: Buffer, offset: number, data: Buffer) => {
    const [, h] = lookup(handle);
    if (!h || h.kind !== 'file') return badHandle(reqid);
    op(reqid, 'write', async () => {
      let done = 0;
      while (done < data.length) {
        done += await new Promise<number>((res, rej) =>
          fs.write(h.fd, data, done, data.length - done, offset + done, (e, w) => (e ? rej(e) : res(w))),
        );
      }
      ok(reqid);
    }, h);
  });

  sftp.on('FSTAT', (reqid: number, handle: Buffer) => {
    const [, h] = lookup(handle);
    if (!h) return badHandle(reqid);
    op(reqid, 'fstat', async () => {
      const st = h.kind === 'file' ? await new Promise<fs.Stats>((res, rej) => fs.fstat(h.fd, (e, s) => (e ? rej(e) : res(s)))) : await fsp.stat(h.path);
      sftp.attrs(reqid, attrsOf(st));
    }, h);
  });

  sftp.on('FSETSTAT', (reqid: number, handle: Buffer, attrs: InputAttributes) => {
    const [, h] = lookup(handle);
    if (!h) return badHandle(reqid);
    op(reqid, 'fsetstat', async () => {
      await setAttrs(h.kind === 'file' ? h.fd : h.path, attrs);
      ok(reqid);
    }, h);
  });

  sftp.on('CLOSE', (reqid: number, handle: Buffer) => {
    const [n, h] = lookup(handle);
    if (!h) return badHandle(reqid);
    handles.delete(n);
    op(reqid, 'close', async () => {
      await Promise.allSettled([...h.pending]);
      if (h.kind === 'file') await new Promise<void>((res, rej) => fs.close(h.fd, (e) => (e ? rej(e) : res())));
      ok(reqid);
    });
  });

  sftp.on('OPENDIR', (reqid: number, dir: string) => {
    op(reqid, 'opendir', async () => {
      const file = resolve(dir);
      const st = await fsp.stat(file);
      if (!st.isDirectory()) throw Object.assign(new Error(`${file} is not a directory`), { code: 'ENOTDIR' });
      sftp.handle(reqid, newHandle({ kind: 'dir', path: file, names: null, pending: new Set() }));
    });
  });

  sftp.on('READDIR', (reqid: number, handle: Buffer) => {
    const [, h] = lookup(handle);
    if (!h || h.kind !== 'dir') return badHandle(reqid);
    op(reqid, 'readdir', async () => {
      if (h.names === null) h.names = ['.', '..', ...(await fsp.readdir(h.path))];
      if (h.names.length === 0) {
        sftp.status(reqid, STATUS_CODE.EOF);
        return;
      }
      // A batch per answer keeps each packet well under the clients' 256 KiB limit.
      const batch = h.names.splice(0, READDIR_BATCH);
      const entries: FileEntry[] = [];
      for (const name of batch) {
        try {
          const st = await fsp.lstat(path.join(h.path, name));
          entries.push({ filename: name, longname: longname(name, st), attrs: attrsOf(st) });
        } catch {
          // Gone between readdir and lstat.
        }
      }
      sftp.name(reqid, entries);
    }, h);
  });

  const statLike = (event: 'STAT' | 'LSTAT', fn: (p: string) => Promise<fs.Stats>): void => {
    sftp.on(event, (reqid: number, file: string) => {
      op(reqid, event.toLowerCase(), async () => sftp.attrs(reqid, attrsOf(await fn(resolve(file)))));
    });
  };
  statLike('STAT', (p) => fsp.stat(p));
  statLike('LSTAT', (p) => fsp.lstat(p));

  sftp.on('SETSTAT', (reqid: number, file: string, attrs: InputAttributes) => {
    op(reqid, 'setstat', async () => {
      await setAttrs(resolve(file), attrs);
      ok(reqid);
    });
  });

  sftp.on('MKDIR', (reqid: number, dir: string, attrs: InputAttributes) => {
    op(reqid, 'mkdir', async () => {
      await fsp.mkdir(resolve(dir), { mode: typeof attrs.mode === 'number' ? attrs.mode & 0o7777 : 0o755 });
      ok(reqid);
    });
  });

  sftp.on('RMDIR', (reqid: number, dir: string) => {
    op(reqid, 'rmdir', async () => {
      await fsp.rmdir(resolve(dir));
      ok(reqid);
    });
  });

  sftp.on('REMOVE', (reqid: number, file: string) => {
    op(reqid, 'remove', async () => {
      await fsp.unlink(resolve(file));
      ok(reqid);
    });
  });

  sftp.on('RENAME', (reqid: number, from: string, to: string) => {
    op(reqid, 'rename', async () => {
      // SFTP v3 RENAME must not overwrite (OpenSSH's sftp-server refuses too).
      const target = resolve(to);
      if (await fsp.lstat(target).then(() => true, () => false)) {
        sftp.status(reqid, STATUS_CODE.FAILURE, `${target} exists`);
        return;
      }
      await fsp.rename(resolve(from), target);
      ok(reqid);
    });
  });

  sftp.on('REALPATH', (reqid: number, file: string) => {
    op(reqid, 'realpath', async () => {
      const abs = resolve(file);
      const real = await fsp.realpath(abs).catch(() => abs); // The target of a put may not exist yet.
      sftp.name(reqid, [{ filename: real, longname: real, attrs: {} as Attributes }]);
    });
  });

  sftp.on('READLINK', (reqid: number, file: string) => {
    op(reqid, 'readlink', async () => {
      const target = await fsp.readlink(resolve(file));
      sftp.name(reqid, [{ filename: target, longname: target, attrs: {} as Attributes }]);
    });
  });

  sftp.on('SYMLINK', (reqid: number, linkPath: string, targetPath: string) => {
    op(reqid, 'symlink', async () => {
      await fsp.symlink(targetPath, resolve(linkPath));
      ok(reqid);
    });
  });

  sftp.on('EXTENDED', (reqid: number) => {
    sftp.status(reqid, STATUS_CODE.OP_UNSUPPORTED);
  });

  const cleanup = (): void => {
    for (const h of handles.values()) if (h.kind === 'file') fs.close(h.fd, () => undefined);
    handles.clear();
  };
  sftp.on('close', cleanup);
  sftp.on('end', () => {
    cleanup();
    sftp.end();
  });
}
