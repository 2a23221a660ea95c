// A hostile guest's SSH server: it accepts any client key and serves SFTP from a made-up tree that
// lies the way a guest root could (names with `/` and `..`, folders without end, files without
// end, a file that fails halfway, an oversized packet). The host-side tests run it on a unix socket;
// the VM tests bundle it (hostile-agent-main.ts) and run it in the guest in place of the agent's
// /run/cove/agent.sock. It also records what the client asked, so a test can show what the host
// sent to the guest.
import * as path from 'node:path';
import { Server, utils, type Attributes, type Connection, type FileEntry, type SFTPWrapper } from 'ssh2';

const { STATUS_CODE } = utils.sftp;

export type HostileNode =
  | { type: 'dir'; entries: Record<string, HostileNode>; mode?: number }
  /** A folder whose listing never ends: every READDIR answers 100 new file names. */
  | { type: 'endless-dir' }
  /** A folder that holds itself as `d`, so it is infinitely deep. */
  | { type: 'deep-dir' }
  | { type: 'file'; data: string; mode?: number }
  /** A file whose reads never reach the end. */
  | { type: 'endless-file' }
  /** A file whose reads fail once `after` bytes were sent. */
  | { type: 'failing-file'; after: number }
  /** A file whose first read is answered with a packet of `bytes` bytes (over SFTP's limit). */
  | { type: 'oversized-file'; bytes: number }
  | { type: 'link'; target: string };

/** The scenarios the tests use, by name (so the guest entry can be told one on its command line). */
export const SCENARIOS: Record<string, HostileNode> = {
  // The old `cove cp` joined these names onto the host destination unchecked.
  traversal: {
    type: 'dir',
    entries: {
      'ok.txt': { type: 'file', data: 'fine\n' },
      '../../cove-canary.txt': { type: 'file', data: 'written through a traversal name\n' },
    },
  },
  slash: { type: 'dir', entries: { 'a/b': { type: 'file', data: 'x' } } },
  nul: { type: 'dir', entries: { 'a\0b': { type: 'file', data: 'x' } } },
  // A plain folder `sub` (the host test plants a link of that name at the destination first).
  'write-through': { type: 'dir', entries: { sub: { type: 'dir', entries: { 'owned.txt': { type: 'file', data: 'written through a host link\n' } } } } },
  endless: { type: 'dir', entries: { many: { type: 'endless-dir' } } },
  deep: { type: 'dir', entries: { loop: { type: 'deep-dir' } } },
  huge: { type: 'dir', entries: { 'huge.bin': { type: 'endless-file' } } },
  failing: { type: 'dir', entries: { 'half.bin': { type: 'failing-file', after: 200_000 } } },
  oversized: { type: 'dir', entries: { 'big-packet.bin': { type: 'oversized-file', bytes: 1024 * 1024 } } },
  // A terminal escape (set the window title) in a name, which is also refused for its `/`.
  escape: { type: 'dir', entries: { '\u001b]0;owned\u0007/x': { type: 'file', data: 'x' } } },
  links: {
    type: 'dir',
    entries: {
      'etc-link': { type: 'link', target: '/etc' },
      dangling: { type: 'link', target: '/nonexistent' },
      sub: { type: 'dir', entries: { loop: { type: 'link', target: '..' } } },
      'file.txt': { type: 'file', data: 'one file\n' },
    },
  },
};

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function attrsOf(node: HostileNode): Attributes {
  const t = { uid: 0, gid: 0, atime: 1_600_000_000, mtime: 1_600_000_000 };
  switch (node.type) {
    case 'dir':
      return { ...t, mode: S_IFDIR | (node.mode ?? 0o755), size: 4096 };
    case 'endless-dir':
    case 'deep-dir':
      return { ...t, mode: S_IFDIR | 0o755, size: 4096 };
    case 'link':
      return { ...t, mode: S_IFLNK | 0o777, size: node.target.length };
    case 'file':
      return { ...t, mode: S_IFREG | (node.mode ?? 0o644), size: Buffer.byteLength(node.data) };
    default:
      return { ...t, mode: S_IFREG | 0o644, size: 1024 };
  }
}

/** Finds the node at an absolute path under `root`, which is served at `mount` (one component). */
function lookup(root: HostileNode, p: string, mount: string): HostileNode | null {
  const parts = path.posix.normalize(p).split('/').filter((s) => s !== '');
  if (parts[0] !== mount) return null;
  let node: HostileNode = root;
  for (const part of parts.slice(1)) {
    if (node.type === 'deep-dir') continue;
    if (node.type === 'endless-dir') return { type: 'file', data: 'x' };
    if (node.type !== 'dir') return null;
    const next: HostileNode | undefined = node.entries[part];
    if (!next) return null;
    node = next;
  }
  return node;
}

export interface HostileLog {
  /** Every request, as `OP path` (writes as `WRITE <bytes>`). */
  requests: string[];
}

/** Serves SFTP from `root` (at `/src`) on one SSH connection; records requests in `log`. */
function serveSftp(sftp: SFTPWrapper, root: HostileNode, log: HostileLog, mount: string): void {
  const handles = new Map<number, { path: string; node: HostileNode | null; listed: number; served: number }>();
  let nextHandle = 1;
  const handleOf = (buf: Buffer) => handles.get(buf.readUInt32BE(0));
  const newHandle = (p: string, node: HostileNode | null) => {
    const id = nextHandle++;
    handles.set(id, { path: p, node, listed: 0, served: 0 });
    const b = Buffer.alloc(4);
    b.writeUInt32BE(id);
    return b;
  };
  const stat = (reqid: number, p: string, op: string) => {
    log.requests.push(`${op} ${p}`);
    const node = lookup(root, p, mount);
    if (!node) return sftp.status(reqid, STATUS_CODE.NO_SUCH_FILE);
    sftp.attrs(reqid, attrsOf(node));
  };
  sftp.on('LSTAT', (reqid: number, p: string) => stat(reqid, p, 'LSTAT'));
  sftp.on('STAT', (reqid: number, p: string) => stat(reqid, p, 'STAT'));
  sftp.on('FSTAT', (reqid: number, h: Buffer) => {
    const o = handleOf(h);
    if (!o?.node) return sftp.status(reqid, STATUS_CODE.FAILURE);
    sftp.attrs(reqid, attrsOf(o.node));
  });
  sftp.on('OPENDIR', (reqid: number, p: string) => {
    log.requests.push(`OPENDIR ${p}`);
    const node = lookup(root, p, mount);
    if (!node || !(node.type === 'dir' || node.type === 'endless-dir' || node.type === 'deep-dir')) return sftp.status(reqid, STATUS_CODE.NO_SUCH_FILE);
    sftp.handle(reqid, newHandle(p, node));
  });
  sftp.on('READDIR', (reqid: number, h: Buffer) => {
    const o = handleOf(h);
    if (!o?.node) return sftp.status(reqid, STATUS_CODE.FAILURE);
    const node = o.node;
    if (node.type === 'endless-dir') {
      const names: FileEntry[] = [];
      for (let i = 0; i < 100; i++) {
        const filename = `f${o.listed++}`;
        names.push({ filename, longname: filename, attrs: attrsOf({ type: 'file', data: 'x' }) });
      }
      return sftp.name(reqid, names);
    }
    if (node.type === 'deep-dir') {
      if (o.listed++ > 0) return sftp.status(reqid, STATUS_CODE.EOF);
      return sftp.name(reqid, [{ filename: 'd', longname: 'd', attrs: attrsOf(node) }]);
    }
    if (node.type !== 'dir' || o.listed++ > 0) return sftp.status(reqid, STATUS_CODE.EOF);
    sftp.name(
      reqid,
      Object.entries(node.entries).map(([filename, child]) => ({ filename, longname: filename, attrs: attrsOf(child) })),
    );
  });
  sftp.on('READLINK', (reqid: number, p: string) => {
    log.requests.push(`READLINK ${p}`);
    const node = lookup(root, p, mount);
    if (node?.type !== 'link') return sftp.status(reqid, STATUS_CODE.NO_SUCH_FILE);
    sftp.name(reqid, [{ filename: node.target, longname: node.target, attrs: {} as Attributes }]);
  });
  sftp.on('OPEN', (reqid: number, p: string) => {
    log.requests.push(`OPEN ${p}`);
    const node = lookup(root, p, mount);
    // Writes from the host land nowhere: the server only records them.
    sftp.handle(reqid, newHandle(p, node));
  });
  sftp.on('READ', (reqid: number, h: Buffer, offset: number, length: number) => {
    const o = handleOf(h);
    const node = o?.node;
    if (!o || !node) return sftp.status(reqid, STATUS_CODE.FAILURE);
    switch (node.type) {
      case 'file': {
        const data = Buffer.from(node.data);
        if (offset >= data.length) return sftp.status(reqid, STATUS_CODE.EOF);
        return sftp.data(reqid, data.subarray(offset, offset + length));
      }
      case 'endless-file':
        return sftp.data(reqid, Buffer.alloc(length, 0x61));
      case 'failing-file':
        if (offset + length > node.after) return sftp.status(reqid, STATUS_CODE.FAILURE, 'the guest failed this read on purpose');
        return sftp.data(reqid, Buffer.alloc(length, 0x62));
      case 'oversized-file':
        return sftp.data(reqid, Buffer.alloc(node.bytes, 0x63));
      default:
        return sftp.status(reqid, STATUS_CODE.FAILURE);
    }
  });
  sftp.on('WRITE', (reqid: number, _h: Buffer, _offset: number, data: Buffer) => {
    log.requests.push(`WRITE ${data.length}`);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  sftp.on('CLOSE', (reqid: number, h: Buffer) => {
    handles.delete(h.readUInt32BE(0));
    sftp.status(reqid, STATUS_CODE.OK);
  });
  for (const op of ['MKDIR', 'REMOVE', 'RMDIR', 'SETSTAT'] as const) {
    sftp.on(op, (reqid: number, p: string) => {
      log.requests.push(`${op} ${p}`);
      sftp.status(reqid, STATUS_CODE.OK);
    });
  }
  sftp.on('FSETSTAT', (reqid: number) => sftp.status(reqid, STATUS_CODE.OK));
  sftp.on('RENAME', (reqid: number, from: string, to: string) => {
    log.requests.push(`RENAME ${from} ${to}`);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  sftp.on('SYMLINK', (reqid: number, linkPath: string, target: string) => {
    log.requests.push(`SYMLINK ${linkPath} -> ${target}`);
    sftp.status(reqid, STATUS_CODE.OK);
  });
  sftp.on('REALPATH', (reqid: number, p: string) => sftp.name(reqid, [{ filename: path.posix.resolve('/', p), longname: p, attrs: {} as Attributes }]));
}

/** An SSH server with `hostKey` that accepts any public key and serves the hostile tree at `/<mount>`. */
export function hostileServer(hostKey: string | Buffer, root: HostileNode, log: HostileLog, mount = 'src'): Server {
  return new Server({ hostKeys: [hostKey], ident: 'cove-agent_hostile' }, (conn: Connection) => {
    conn.on('authentication', (ctx) => (ctx.method === 'publickey' ? ctx.accept() : ctx.reject(['publickey'])));
    conn.on('error', () => undefined);
    conn.on('ready', () => {
      conn.on('session', (accept) => {
        const session = accept();
        session.on('sftp', (acceptSftp) => serveSftp(acceptSftp(), root, log, mount));
      });
    });
  });
}
