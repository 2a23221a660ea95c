// `cove cp` over exec streams (agent/PROTOCOL.md, "Exec streams"), with the stdin port carrying the
// bytes when it is free, so they cross neither SFTP's round trips nor the agent's JavaScript:
// - one host file goes to the guest by a single command (PUT_FILE_SCRIPT) that picks the name,
//   writes a temporary file, checks its size, sets its mode and time and renames it into place;
// - in a folder, a large file's content goes by `cat` (execWriter), SFTP making and renaming it;
// - one guest file comes to the host by `cat` (GET_FILE_SCRIPT) after a one-line header with its
//   mode and times, its stdout on the port; the host writes it as getTree does (no-follow, under a
//   temporary name, renamed when complete) and believes nothing the guest says beyond the limits
//   of docs/security.md.
// Each gives way to SFTP when exec streams are not available, and the one-file paths when the path
// is not a plain file (a folder or link: SFTP copies those as docker cp does).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { vmFile } from '../../contract/layout';
import { shellJoin } from '../../contract/ssh';
import { escapeGuestText } from '../../contract/escape';
import { at, Budget, CopyError, placeAt, shown, tempName, type ContentWriter, type CopyLimits } from './copy-tree';
import { execOverStreams, execStreamsEnabled } from './exec-stream';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

/**
 * Runs in the guest as `sh -c PUT_FILE_SCRIPT cove-cp DST BASE TEMP SIZE UMASK MODE MTIME`, the
 * file's bytes on stdin. As `docker cp` does, a DST that is a folder (followed as the guest resolves
 * it) receives BASE inside it; a link at the final name is replaced, never written through; a folder
 * there is refused. The content is written under the temporary name TEMP beside it (made new, with
 * UMASK), in 1 MiB blocks (the stdin port's reads are small, and fewer, larger writes are cheaper
 * under TCG), and kept only when exactly SIZE bytes arrived, which dd's own count says. MODE, when
 * not empty, is set with chmod (modeArgs: only a mode UMASK cannot give). Both times become MTIME,
 * as a tar extraction without access times (`docker cp`) leaves them.
 * Every program started costs about 60 ms in a TCG guest, so the script starts three (dd, touch,
 * mv; chmod too for an executable) and does the rest in the shell.
 */
export const PUT_FILE_SCRIPT = `dst=$1 base=$2 temp=$3 size=$4 mask=$5 mode=$6 mtime=$7
umask "$mask"
if [ -d "$dst" ]; then case $dst in */) dst=$dst$base ;; *) dst=$dst/$base ;; esac; fi
dir=\${dst%/*}; tmp=$dir/$temp
if [ ! -d "\${dir:-/}" ]; then printf 'the guest folder %s does not exist: create it first\\n' "$dir" >&2; exit 1; fi
if [ -d "$dst" ] && [ ! -L "$dst" ]; then printf '%s is a folder in the guest, so a file cannot replace it; move it away and copy again\\n' "$dst" >&2; exit 1; fi
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
if ! said=$(LC_ALL=C dd of="$tmp" bs=1M iflag=fullblock conv=excl 2>&1); then printf 'writing %s in the guest failed (a full guest disk? \`df -h\` in the guest says): %s\\n' "$dst" "\${said%%
*}" >&2; exit 1; fi
case $said in *"records out
$size byte"*) ;; *) printf '%s: the bytes that arrived are not the %s the host file held (it changed while it was copied, or the copy was cut); nothing was kept; copy again\\n' "$dst" "$size" >&2; exit 1 ;; esac
if [ -n "$mode" ]; then chmod -- "$mode" "$tmp" || exit 1; fi
touch -d "@$mtime" -- "$tmp" && mv -f -T -- "$tmp" "$dst" || exit 1
trap - EXIT
`;

/**
 * The UMASK and MODE arguments of PUT_FILE_SCRIPT for permission bits `perm`: a mode without
 * execute bits (most files) is made by the umask as the file is created, saving a chmod; any other
 * is made 0600 first and set by chmod once complete.
 */
export function modeArgs(perm: number): { mask: string; mode: string } {
  const bits = perm & 0o777;
  if ((bits & ~0o666) === 0) return { mask: (~bits & 0o777).toString(8).padStart(3, '0'), mode: '' };
  return { mask: '077', mode: bits.toString(8) };
}

/** A time in seconds with nanoseconds, as `touch -d @…` reads it. */
export function touchTime(ns: bigint): string {
  const s = ns / 1_000_000_000n;
  const frac = ns % 1_000_000_000n;
  return `${s}.${frac.toString().padStart(9, '0')}`;
}

/** Collects what a guest command says on stderr (the first 4 KiB); it is escaped where it is shown. */
function stderrCollector(): { stream: Writable; said: () => string } {
  let said = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (said.length < 4096) said += chunk.toString('utf8');
      cb();
    },
  });
  return { stream, said: () => said.trim() };
}

/**
 * Runs `command` in sandbox `name` with the first `size` bytes of the host descriptor `fd` as its
 * stdin (on the stdin port when it is free) and its stdout dropped. Resolves with its exit code and
 * what it said on stderr (not escaped), or null when exec streams are not available (nothing ran).
 */
async function execWithFile(name: string, command: string, fd: number, size: number): Promise<{ code: number; said: string } | null> {
  const stdin = size > 0 ? fs.createReadStream('', { fd, start: 0, end: size - 1, autoClose: false }) : Readable.from([]);
  const err = stderrCollector();
  const stdout = new Writable({ write: (_c, _e, cb) => cb() });
  const code = await execOverStreams(vmFile(name, 'execSock'), { command, env: {}, cwd: '/' }, { stdin, stdout, stderr: err.stream });
  if (code === null) {
    stdin.destroy();
    return null;
  }
  return { code, said: err.said() };
}

/**
 * Copies the host file `local` to the guest path `remote` of sandbox `name` with one command over
 * exec streams. Resolves false, having changed nothing, when `local` is not a regular file (a
 * folder or link: putTree copies those) or exec streams are not available; throws a CopyError
 * that says what went wrong otherwise.
 */
export async function putFileByExec(name: string, local: string, remote: string, limits: CopyLimits): Promise<boolean> {
  if (!execStreamsEnabled()) return false;
  let fd: number;
  try {
    // No-follow and non-blocking: a link is copied as a link (by putTree), and a pipe never blocks.
    fd = fs.openSync(local, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch {
    return false; // A link (ELOOP), or unreadable: putTree copies it or says why.
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile()) return false;
    const size = Number(st.size);
    const budget = new Budget(limits);
    budget.entry(local, 0);
    budget.addBytes(size, local);
    const { mask, mode } = modeArgs(Number(st.mode));
    const args = [remote, path.basename(path.resolve(local)), tempName(), String(size), mask, mode, touchTime(st.mtimeNs)];
    const r = await execWithFile(name, shellJoin(['sh', '-c', PUT_FILE_SCRIPT, 'cove-cp', ...args]), fd, size);
    if (r === null) return false;
    if (r.code !== 0) throw new CopyError(escapeGuestText(r.said) || `copying to ${JSON.stringify(escapeGuestText(remote))} failed in the guest (exit status ${r.code}); nothing was kept`);
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * `cove cp`'s large files in a folder: their content goes by `cat` over an exec stream instead of
 * SFTP over SSH. SFTP still makes the file (under its temporary name), sets its mode and times, and
 * renames it. Null when exec streams are not available; SFTP then writes the content too.
 */
export function execWriter(name: string): ContentWriter | null {
  if (!execStreamsEnabled()) return null;
  return async (fd, size, guestPath) => {
    const r = await execWithFile(name, `cat > ${shellJoin([guestPath])}`, fd, size);
    if (r === null) return false;
    if (r.code !== 0) throw new Error(`cat in the guest exited with ${r.code}${r.said ? `: ${r.said}` : ''}`);
    return true;
  };
}

/** The exit status of GET_FILE_SCRIPT for "not a plain file here": the copy goes by SFTP. */
const NOT_A_FILE = 3;

/**
 * Runs in the guest as `sh -c GET_FILE_SCRIPT cove-cp SRC`. For a plain file (not a link), prints
 * `cove-cp MODE ATIME MTIME` (octal mode, times in seconds with nanoseconds) and a newline, then
 * the file's bytes to its end; for anything else exits with NOT_A_FILE, printing nothing. No size
 * is announced: as over SFTP, a file is read to its end (a file in /proc says it holds 0 bytes),
 * and COVE_CP_MAX_BYTES bounds what the host takes.
 */
export const GET_FILE_SCRIPT = `src=$1
if [ -L "$src" ] || [ ! -f "$src" ]; then exit ${NOT_A_FILE}; fi
exec < "$src" || exit 1
head=$(stat -L -c '%a %.9X %.9Y' /dev/stdin) || exit 1
printf 'cove-cp %s\\n' "$head"
exec cat
`;

interface GuestFileHead {
  mode: number;
  atime: number;
  mtime: number;
}

/** The header GET_FILE_SCRIPT prints: what a guest may announce, and nothing longer. */
const HEADER = /^cove-cp ([0-7]{1,4}) (\d{1,12}(?:\.\d{1,9})?) (\d{1,12}(?:\.\d{1,9})?)\n$/;
const HEADER_MAX = 96;

/**
 * Copies the guest file `remote` of sandbox `name` to the host path `local` (which names the new
 * file; its folder exists) with one command over exec streams. Resolves false, having made nothing,
 * when `remote` is not a plain file or exec streams are not available; throws a CopyError that says
 * what went wrong otherwise (a malformed header, COVE_CP_MAX_BYTES passed, the command failing or
 * its connection lost), leaving nothing under the name.
 */
export async function getFileByExec(name: string, remote: string, local: string, limits: CopyLimits): Promise<boolean> {
  if (!execStreamsEnabled()) return false;
  const parent = path.dirname(path.resolve(local));
  const base = path.basename(path.resolve(local));
  let dirFd: number;
  try {
    dirFd = fs.openSync(parent, O_RDONLY | O_DIRECTORY);
  } catch {
    return false; // getTree says why.
  }
  const temp = tempName();
  // Ctrl-C or a kill mid-copy: the half-written temporary file goes with the process.
  const onSignal = (sig: NodeJS.Signals) => {
    fs.rmSync(at(dirFd, temp), { force: true });
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Written by the stream below: kept in one object, since the compiler cannot follow the closure.
  const st: { head: GuestFileHead | null; fd: number | null; failure: CopyError | null } = { head: null, fd: null, failure: null };
  try {
    const budget = new Budget(limits);
    budget.entry(remote, 0);
    let pending = Buffer.alloc(0);
    const stop = (e: CopyError, cb: (err?: Error) => void) => {
      st.failure ??= e;
      cb(e); // Ends the stream: the command in the guest loses its stdout.
    };
    const stdout = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        let data = chunk;
        if (st.head === null) {
          pending = Buffer.concat([pending, chunk]);
          const nl = pending.indexOf(0x0a);
          if (nl < 0) {
            if (pending.length > HEADER_MAX) return stop(new CopyError(`the guest answered the copy of ${shown(remote)} with no header line; nothing was kept`), cb);
            return cb();
          }
          const m = HEADER.exec(pending.subarray(0, nl + 1).toString('latin1'));
          if (!m) return stop(new CopyError(`the guest answered the copy of ${shown(remote)} with a malformed header (${shown(pending.subarray(0, Math.min(nl, 80)).toString('utf8'))}); nothing was kept`), cb);
          st.head = { mode: parseInt(m[1], 8), atime: Number(m[2]), mtime: Number(m[3]) };
          try {
            st.fd = fs.openSync(at(dirFd, temp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
          } catch (e) {
            return stop(new CopyError(`writing ${shown(local)} failed: ${(e as Error).message}`), cb);
          }
          data = pending.subarray(nl + 1);
          pending = Buffer.alloc(0);
        }
        if (st.fd === null) return stop(new CopyError(`writing ${shown(local)} failed: no file is open`), cb);
        try {
          budget.addBytes(data.length, remote);
        } catch (e) {
          return stop(e as CopyError, cb);
        }
        try {
          let off = 0;
          while (off < data.length) off += fs.writeSync(st.fd, data, off, data.length - off);
        } catch (e) {
          return stop(new CopyError(`writing ${shown(local)} failed: ${(e as Error).message}`), cb);
        }
        cb();
      },
    });
    stdout.on('error', () => undefined); // Seen through st.failure.
    const err = stderrCollector();
    const code = await execOverStreams(vmFile(name, 'execSock'), { command: shellJoin(['sh', '-c', GET_FILE_SCRIPT, 'cove-cp', remote]), env: {}, cwd: '/' }, { stdin: null, stdout, stderr: err.stream }, { stdoutPort: true });
    if (st.failure) throw st.failure;
    if (code === null || (code === NOT_A_FILE && st.head === null)) return false;
    const { head, fd } = st;
    if (code !== 0 || head === null || fd === null) {
      const said = escapeGuestText(err.said());
      throw new CopyError(`reading ${shown(remote)} in the guest failed (exit status ${code})${said ? `: ${said}` : ''}; nothing was kept`);
    }
    // Permission bits only: a setuid or setgid bit from the guest is not carried to the host.
    fs.fchmodSync(fd, head.mode & 0o777);
    fs.futimesSync(fd, head.atime, head.mtime);
    fs.closeSync(fd);
    st.fd = null;
    placeAt(dirFd, temp, base, local);
    return true;
  } catch (e) {
    fs.rmSync(at(dirFd, temp), { force: true });
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (st.fd !== null) fs.closeSync(st.fd);
    fs.closeSync(dirFd);
  }
}
