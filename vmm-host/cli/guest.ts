// Commands that reach into a guest over SSH: exec, shell, cp, logs and the OpenSSH proxy.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Client, ClientChannel, SFTPWrapper } from 'ssh2';
import { checkName } from '../../contract/names';
import { vmFile } from '../../contract/layout';
import { UsageError } from './output';
import { connectSandbox, shellJoin, sshProxy } from '../../contract/ssh';

function workspaceOf(name: string): string | undefined {
  try {
    return (JSON.parse(fs.readFileSync(vmFile(name, 'config'), 'utf8')) as { workspace?: string }).workspace;
  } catch {
    return undefined;
  }
}

/** Streams stdin/stdout/stderr; resolves with the exit code to use (128+n for a signal). */
function runChannel(ch: ClientChannel, forwardStdin: boolean): Promise<number> {
  return new Promise((resolve) => {
    let code: number | null = null;
    let sig: string | null = null;
    ch.on('exit', (c: number | null, s?: string) => {
      code = c;
      sig = s ?? null;
    });
    ch.pipe(process.stdout, { end: false });
    ch.stderr.pipe(process.stderr, { end: false });
    if (forwardStdin) process.stdin.pipe(ch);
    else ch.end();
    ch.on('close', () => {
      process.stdin.unpipe(ch);
      const signals: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, TERM: 15, PIPE: 13, ABRT: 6, SEGV: 11 };
      resolve(code ?? (sig ? 128 + (signals[sig] ?? 1) : 255));
    });
  });
}

export async function execCommand(name: string, argv: string[], opts: { tty: boolean; interactive: boolean }): Promise<number> {
  checkName(name);
  if (argv.length === 0) throw new UsageError('cove exec needs a command: cove exec NAME -- CMD [ARG…]');
  const client = await connectSandbox(name);
  const cwd = workspaceOf(name);
  const forwardStdin = opts.interactive || !process.stdin.isTTY;
  try {
    const ch = await new Promise<ClientChannel>((resolve, reject) =>
      client.exec(
        shellJoin(argv),
        { env: cwd ? { COVE_CWD: cwd } : {}, pty: opts.tty ? { term: process.env.TERM ?? 'xterm-256color', rows: process.stdout.rows ?? 24, cols: process.stdout.columns ?? 80 } : undefined },
        (err, c) => (err ? reject(err) : resolve(c)),
      ),
    );
    if (opts.tty && process.stdin.isTTY) process.stdin.setRawMode(true);
    return await runChannel(ch, forwardStdin);
  } finally {
    if (opts.tty && process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
    client.end();
  }
}

export async function shellCommand(name: string): Promise<number> {
  checkName(name);
  const client = await connectSandbox(name);
  const cwd = workspaceOf(name);
  try {
    const ch = await new Promise<ClientChannel>((resolve, reject) =>
      client.shell(
        { term: process.env.TERM ?? 'xterm-256color', rows: process.stdout.rows ?? 24, cols: process.stdout.columns ?? 80 },
        { env: cwd ? { COVE_CWD: cwd } : {} },
        (err, c) => (err ? reject(err) : resolve(c)),
      ),
    );
    const onResize = () => ch.setWindow(process.stdout.rows ?? 24, process.stdout.columns ?? 80, 0, 0);
    process.stdout.on('resize', onResize);
    if (process.stdin.isTTY) process.stdin.setRawMode(true);
    try {
      return await runChannel(ch, true);
    } finally {
      process.stdout.off('resize', onResize);
    }
  } finally {
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
    client.end();
  }
}

/** `NAME:/path` names a guest path; anything else is a host path. */
function splitRemote(spec: string): { name: string; path: string } | null {
  const m = /^([a-z0-9][a-z0-9-]*):(\/.*)$/.exec(spec);
  return m ? { name: m[1], path: m[2] } : null;
}

const sftpOf = (client: Client) => new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
const call = <T>(fn: (cb: (err: Error | null | undefined, v: T) => void) => void) =>
  new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));

async function putTree(sftp: SFTPWrapper, local: string, remote: string): Promise<void> {
  const st = fs.statSync(local);
  if (st.isDirectory()) {
    await call<void>((cb) => sftp.mkdir(remote, { mode: st.mode & 0o7777 }, (e) => cb(e && (e as { code?: number }).code !== 4 ? e : null, undefined)));
    for (const entry of fs.readdirSync(local)) await putTree(sftp, path.join(local, entry), path.posix.join(remote, entry));
  } else {
    await call<void>((cb) => sftp.fastPut(local, remote, { mode: st.mode & 0o7777 }, (e) => cb(e, undefined)));
  }
}

async function getTree(sftp: SFTPWrapper, remote: string, local: string): Promise<void> {
  const st = await call<{ isDirectory(): boolean; mode: number }>((cb) => sftp.stat(remote, cb));
  if (st.isDirectory()) {
    fs.mkdirSync(local, { recursive: true });
    const entries = await call<Array<{ filename: string }>>((cb) => sftp.readdir(remote, cb));
    for (const e of entries) await getTree(sftp, path.posix.join(remote, e.filename), path.join(local, e.filename));
  } else {
    await call<void>((cb) => sftp.fastGet(remote, local, (e) => cb(e, undefined)));
  }
}

/** `cove cp SRC DST`: exactly one of them is `NAME:/abs/path`; folders are copied whole. */
export async function cpCommand(src: string, dst: string): Promise<void> {
  const rs = splitRemote(src);
  const rd = splitRemote(dst);
  if ((rs === null) === (rd === null)) throw new UsageError('cove cp copies between the host and a sandbox: one of SRC and DST must be NAME:/absolute/path');
  const remote = (rs ?? rd)!;
  const client = await connectSandbox(remote.name);
  try {
    const sftp = await sftpOf(client);
    if (rd) {
      if (!fs.existsSync(src)) throw new UsageError(`${src} does not exist on the host`);
      let target = rd.path;
      const isDir = await call<{ isDirectory(): boolean }>((cb) => sftp.stat(target, cb)).then((s) => s.isDirectory(), () => false);
      if (isDir) target = path.posix.join(target, path.basename(path.resolve(src)));
      await putTree(sftp, src, target);
    } else {
      let target = dst;
      if (fs.existsSync(target) && fs.statSync(target).isDirectory()) target = path.join(target, path.posix.basename(rs!.path));
      await getTree(sftp, rs!.path, target);
    }
  } finally {
    client.end();
  }
}

/** Prints the guest console log; with `follow`, keeps printing what is appended. */
export async function logsCommand(name: string, follow: boolean): Promise<void> {
  checkName(name);
  const file = vmFile(name, 'consoleLog');
  if (!fs.existsSync(vmFile(name, 'config'))) throw new UsageError(`there is no sandbox named ${name}`);
  let pos = 0;
  const pump = () => {
    let size = 0;
    try {
      size = fs.statSync(file).size;
    } catch {
      return;
    }
    if (size < pos) pos = 0; // A new boot started a new log.
    if (size === pos) return;
    const fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(size - pos);
    fs.readSync(fd, buf, 0, buf.length, pos);
    fs.closeSync(fd);
    pos = size;
    process.stdout.write(buf);
  };
  pump();
  if (!follow) return;
  await new Promise<void>(() => {
    setInterval(pump, 300);
  });
}

/** OpenSSH's ProxyCommand: joins stdin/stdout to the sandbox's ssh.sock. */
export function sshProxyCommand(name: string): Promise<number> {
  checkName(name);
  return sshProxy(name);
}
