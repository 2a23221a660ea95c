// The clients' data plane: the CLI's exec, shell and cp and the extension's terminals go over SSH to
// the guest agent, through the sandbox's ssh.sock that coved relays. Keys are the sandbox's own; the
// host key is pinned. It does not import `vscode`.
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Client } from 'ssh2';
import { CoveError } from './errors';
import { ErrorCodes } from './protocol';
import { coveHome, vmFile } from './layout';

export async function connectSandbox(name: string, home = coveHome(), timeoutMs = 60_000): Promise<Client> {
  // Loaded here, not at the top: ssh2 takes ~45 ms to load, and `cove exec` and `cove cp` over exec
  // streams never need it.
  const { Client: SshClient, utils } = await import('ssh2');
  let clientKey: string;
  let known: string;
  try {
    clientKey = fs.readFileSync(vmFile(name, 'clientKey', home), 'utf8');
    known = fs.readFileSync(vmFile(name, 'knownHosts', home), 'utf8');
  } catch {
    throw new CoveError(ErrorCodes.notFound, `there is no sandbox named ${name}`, 'list them with `cove ls`');
  }
  const pinned = utils.parseKey(known.trim().split(/\s+/).slice(1, 3).join(' '));
  if (pinned instanceof Error) throw new Error(`the pinned host key of ${name} cannot be read: ${pinned.message}`);
  const blob = pinned.getPublicSSH();
  const sock = net.connect(vmFile(name, 'sshSock', home));
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', (e) =>
      reject(new CoveError(ErrorCodes.conflict, `cannot reach sandbox ${name} (${e.message})`, `is it running? see \`cove ls\`; start it with \`cove start ${name}\``)),
    );
  });
  const client = new SshClient();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('error', (e) =>
      reject(new CoveError(ErrorCodes.conflict, `cannot open a session in sandbox ${name}: ${e.message}`, `is it running? see \`cove ls\``)),
    );
    client.connect({ sock, username: 'root', privateKey: clientKey, readyTimeout: timeoutMs, hostVerifier: (key: Buffer) => key.equals(blob) });
  });
  return client;
}

/** Quotes arguments for /bin/sh so the guest runs exactly the argv given. */
export function shellJoin(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** OpenSSH's ProxyCommand: joins stdin/stdout to the sandbox's ssh.sock; resolves the exit code. */
export function sshProxy(name: string, home = coveHome()): Promise<number> {
  return new Promise((resolve) => {
    const sock = net.connect(vmFile(name, 'sshSock', home));
    sock.on('error', (e) => {
      process.stderr.write(`cove ssh-proxy: cannot reach sandbox ${name}: ${e.message}\n`);
      resolve(255);
    });
    sock.on('connect', () => {
      process.stdin.pipe(sock);
      sock.pipe(process.stdout);
    });
    sock.on('close', () => resolve(0));
  });
}
