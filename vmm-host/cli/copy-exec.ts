// `cove cp` host to guest over exec streams (agent/PROTOCOL.md, "Exec streams"), whose stdin takes
// the stdin port when it is free, so the bytes reach the guest without SFTP's round trips:
// - one host file is copied by a single command in the guest (PUT_FILE_SCRIPT) that picks the
//   name, writes a temporary file, checks its size, sets mode and times and renames it into place;
// - in a folder, a large file's content goes by `cat` (execWriter), SFTP making and renaming it.
// Both give way to SFTP when exec streams are not available. The guest is the destination here,
// so what it answers is only shown to the user (escaped), never acted on by the host.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { vmFile } from '../../contract/layout';
import { shellJoin } from '../../contract/ssh';
import { escapeGuestText } from '../../contract/escape';
import { Budget, CopyError, tempName, type ContentWriter, type CopyLimits } from './copy-tree';
import { execOverStreams, execStreamsEnabled } from './exec-stream';

const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

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

const discard = () => new Writable({ write: (_c, _e, cb) => cb() });

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
    const stdin = size > 0 ? fs.createReadStream('', { fd, start: 0, end: size - 1, autoClose: false }) : Readable.from([]);
    const err = stderrCollector();
    const code = await execOverStreams(vmFile(name, 'execSock'), { command: shellJoin(['sh', '-c', PUT_FILE_SCRIPT, 'cove-cp', ...args]), env: {}, cwd: '/' }, { stdin, stdout: discard(), stderr: err.stream });
    if (code === null) {
      stdin.destroy();
      return false;
    }
    if (code !== 0) throw new CopyError(escapeGuestText(err.said()) || `copying to ${JSON.stringify(escapeGuestText(remote))} failed in the guest (exit status ${code}); nothing was kept`);
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
    const err = stderrCollector();
    const stdin = fs.createReadStream('', { fd, start: 0, end: size - 1, autoClose: false });
    const code = await execOverStreams(vmFile(name, 'execSock'), { command: `cat > ${shellJoin([guestPath])}`, env: {}, cwd: '/' }, { stdin, stdout: discard(), stderr: err.stream });
    if (code === null) {
      stdin.destroy();
      return false;
    }
    if (code !== 0) throw new Error(`cat in the guest exited with ${code}${err.said() ? `: ${err.said()}` : ''}`);
    return true;
  };
}
