// What the hostile-guest tests share: a hostile SSH server on a unix socket of this host, and an
// ssh2 client connected to it the way the CLI connects to a sandbox.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, utils, type SFTPWrapper, type Server } from 'ssh2';

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix));

/**
 * A new ed25519 key in OpenSSH form. Now and then ssh2 makes one it cannot parse back ("Malformed
 * OpenSSH private key"), so a key is only handed out once it parses.
 */
export function newHostKey(): string {
  for (;;) {
    const key = utils.generateKeyPairSync('ed25519').private;
    if (!(utils.parseKey(key) instanceof Error)) return key;
  }
}

/** Listens `server` on a unix socket in `dir`; resolves with its path. */
export async function listenUnix(server: Server, dir: string): Promise<string> {
  const sock = path.join(dir, 'agent.sock');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sock, () => resolve());
  });
  return sock;
}

/** An ssh2 client on `sock` with a throwaway key, and its SFTP session. */
export async function sftpClient(sock: string): Promise<{ client: Client; sftp: SFTPWrapper }> {
  const client = new Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('error', reject);
    client.connect({ sock: net.connect(sock), username: 'root', privateKey: newHostKey(), readyTimeout: 10_000, strictVendor: false });
  });
  const sftp = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
  return { client, sftp };
}

/** Every path under `dir` with its type (`f`, `d`, `l -> target`), sorted. */
export function treeOf(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isSymbolicLink()) out.push(`l ${r} -> ${fs.readlinkSync(p)}`);
      else if (e.isDirectory()) {
        out.push(`d ${r}`);
        walk(p, r);
      } else out.push(`f ${r}`);
    }
  };
  walk(dir, '');
  return out.sort();
}
