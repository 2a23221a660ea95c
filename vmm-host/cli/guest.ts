// Commands that reach into a guest: exec (over exec streams, or SSH), shell, cp, logs and the
// OpenSSH proxy (SSH).
import { CWD_ENV } from '../../contract/guest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Client, ClientChannel, SFTPWrapper } from 'ssh2';
import { checkName } from '../../contract/names';
import { vmFile } from '../../contract/layout';
import { UsageError } from './output';
import { copyLimitsFromEnv, getTree, putTree } from './copy-tree';
import { execWriter, getFileByExec, putFileByExec } from './copy-exec';
import { escapeGuestLines } from '../../contract/escape';
import { connectSandbox, shellJoin, sshProxy } from '../../contract/ssh';
import { execOverStreams, execStreamsEnabled, LOST_EXIT_STATUS } from './exec-stream';

function workspaceOf(name: string): string | undefined {
  try {
    return (JSON.parse(fs.readFileSync(vmFile(name, 'config'), 'utf8')) as { workspace?: string }).workspace;
  } catch {
    return undefined;
  }
}

// node types the size as always set, but it is undefined when stdout is not a terminal.
const termRows = (): number => (process.stdout.isTTY ? process.stdout.rows : 24);
const termCols = (): number => (process.stdout.isTTY ? process.stdout.columns : 80);

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
    // A reader of our output that went away (`cove exec … | head`): stop, as SIGPIPE would.
    let readerGone = false;
    const onWriteError = () => {
      readerGone = true;
      ch.unpipe();
      ch.stderr.unpipe();
      // Drained into nothing: the channel emits 'close' only once its output has been read.
      ch.resume();
      ch.stderr.resume();
      ch.close();
    };
    process.stdout.on('error', onWriteError);
    process.stderr.on('error', onWriteError);
    ch.on('close', () => {
      process.stdout.off('error', onWriteError);
      process.stderr.off('error', onWriteError);
      process.stdin.unpipe(ch);
      if (readerGone) return resolve(code ?? 128 + 13);
      const signals: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, KILL: 9, TERM: 15, PIPE: 13, ABRT: 6, SEGV: 11 };
      // Neither an exit status nor a signal: the connection to the guest broke under the command.
      // Say so, instead of a bare 255 (coved's log has the sandbox's side of it).
      if (code === null && sig === null) process.stderr.write(LOST_EXIT_STATUS);
      resolve(code ?? (sig ? 128 + (signals[sig] ?? 1) : 255));
    });
  });
}

export async function execCommand(name: string, argv: string[], opts: { tty: boolean; interactive: boolean }): Promise<number> {
  checkName(name);
  if (argv.length === 0) throw new UsageError('cove exec needs a command: cove exec NAME -- CMD [ARG…]');
  const cwd = workspaceOf(name);
  const forwardStdin = opts.interactive || !process.stdin.isTTY;
  // Without a terminal the command's bytes go over exec streams on the data channel, not SSH.
  if (!opts.tty && execStreamsEnabled()) {
    const req = { command: shellJoin(argv), env: {}, ...(cwd ? { cwd } : {}) };
    const code = await execOverStreams(vmFile(name, 'execSock'), req, { stdin: forwardStdin ? process.stdin : null, stdout: process.stdout, stderr: process.stderr });
    if (code !== null) {
      process.stdin.pause();
      return code;
    }
  }
  const client = await connectSandbox(name);
  try {
    const ch = await new Promise<ClientChannel>((resolve, reject) =>
      client.exec(
        shellJoin(argv),
        { env: cwd ? { [CWD_ENV]: cwd } : {}, pty: opts.tty ? { term: process.env.TERM ?? 'xterm-256color', rows: termRows(), cols: termCols() } : undefined },
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
        { term: process.env.TERM ?? 'xterm-256color', rows: termRows(), cols: termCols() },
        { env: cwd ? { [CWD_ENV]: cwd } : {} },
        (err, c) => (err ? reject(err) : resolve(c)),
      ),
    );
    const onResize = () => ch.setWindow(termRows(), termCols(), 0, 0);
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

const statGuest = (sftp: SFTPWrapper, p: string) =>
  new Promise<{ isDirectory(): boolean } | null>((resolve) => sftp.stat(p, (err, s) => resolve(err ? null : s)));

/**
 * `cove cp SRC DST`: exactly one of them is `NAME:/abs/path`. As with `docker cp`, folders are copied
 * whole, links are copied as links, and a DST that is an existing folder receives SRC inside it.
 * The rules against a hostile guest are in copy-tree.ts.
 */
export async function cpCommand(src: string, dst: string): Promise<void> {
  const rs = splitRemote(src);
  const rd = splitRemote(dst);
  if ((rs === null) === (rd === null)) throw new UsageError('cove cp copies between the host and a sandbox: one of SRC and DST must be NAME:/absolute/path');
  const limits = copyLimitsFromEnv();
  const note = (msg: string) => process.stderr.write(`cove: ${msg}\n`);
  if (rd) {
    let exists = true;
    try {
      fs.lstatSync(src);
    } catch {
      exists = false;
    }
    if (!exists) throw new UsageError(`${src} does not exist on the host`);
  }
  const remote = rs ?? rd;
  if (!remote) return;
  let hostTarget = dst;
  if (rs) {
    if (fs.existsSync(hostTarget) && fs.statSync(hostTarget).isDirectory()) hostTarget = path.join(hostTarget, path.posix.basename(rs.path));
    const parent = path.dirname(path.resolve(hostTarget));
    if (!fs.existsSync(parent)) throw new UsageError(`the host folder ${parent} does not exist: create it first`);
  }
  // One plain file: a single command over exec streams, without SFTP (copy-exec.ts).
  if (rd && (await putFileByExec(rd.name, src, rd.path, limits))) return;
  if (rs && (await getFileByExec(rs.name, rs.path, hostTarget, limits))) return;
  const client = await connectSandbox(remote.name);
  try {
    const sftp = await sftpOf(client);
    if (rd) {
      let target = rd.path;
      // The destination folder is the user's choice, so it is followed as the guest resolves it.
      if ((await statGuest(sftp, target))?.isDirectory()) target = path.posix.join(target, path.basename(path.resolve(src)));
      await putTree(sftp, src, target, limits, note, execWriter(remote.name));
    } else if (rs) {
      await getTree(sftp, rs.path, hostTarget, limits, note);
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
  // On a terminal the guest's bytes are shown with control characters escaped, so a guest cannot
  // drive the terminal; into a pipe or a file they go as they are.
  const escape = process.stdout.isTTY;
  const decoder = new StringDecoder('utf8');
  const pump = () => {
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      return;
    }
    if (size < pos) pos = 0; // A new boot started a new log.
    if (size === pos) return;
    const fd = fs.openSync(file, 'r');
    try {
      // In pieces: a guest can make its console log as large as the host disk allows.
      const buf = Buffer.allocUnsafe(64 * 1024);
      while (pos < size) {
        const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
        if (n === 0) break;
        pos += n;
        // The start of a long log may be a punched hole (console-bound.ts), which reads as NULs.
        const bytes = Buffer.from(buf.subarray(0, n).filter((b) => b !== 0));
        if (bytes.length === 0) continue;
        if (escape) process.stdout.write(escapeGuestLines(decoder.write(bytes).replace(/\r\n/g, '\n')));
        else process.stdout.write(bytes);
      }
    } finally {
      fs.closeSync(fd);
    }
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
