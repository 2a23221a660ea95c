// A minimal writer for the `newc` cpio format the kernel unpacks as an initramfs. Written here
// (not with cpio(1)) so that the initramfs can hold a /dev/console node without root and is
// byte-for-byte reproducible (fixed mtimes and inode numbers).

export interface CpioEntry {
  name: string;
  /** Full st_mode, type bits included (0o100755, 0o040755, 0o020600, 0o120777). */
  mode: number;
  data?: Buffer;
  rdevMajor?: number;
  rdevMinor?: number;
}

export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFLNK = 0o120000;

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (e: CpioEntry) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    const fields = [
      ino++, e.mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, e.rdevMajor ?? 0, e.rdevMinor ?? 0, name.length, 0,
    ];
    const header = Buffer.from('070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'ascii');
    parts.push(header, name, Buffer.alloc(pad4(header.length + name.length)));
    parts.push(data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) push(e);
  push({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}
