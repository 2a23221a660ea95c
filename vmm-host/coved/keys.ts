// Per-sandbox SSH keys: coved's client key and the guest's host key, made at create time. The host
// key's public half is pinned (known_hosts); the private half reaches the guest on the config disk.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { utils } from 'ssh2';
import { VM, contextName } from '../../contract/layout';

export interface SandboxKeys {
  clientPrivate: string;
  clientPublic: string;
  hostPrivate: string;
  hostPublic: string;
}

/**
 * An ed25519 key pair that ssh2 can read back. ssh2's generator now and then writes an OpenSSH
 * private key its own parser rejects ("Malformed OpenSSH private key": about 1 in 250 here), and a
 * sandbox with such a key could never be reached: make another.
 */
export function keyPair(comment = ''): { private: string; public: string } {
  for (let i = 0; i < 20; i++) {
    const k = utils.generateKeyPairSync('ed25519', { comment });
    const parsed = utils.parseKey(k.private);
    if (!(parsed instanceof Error) && !(Array.isArray(parsed) && parsed.length === 0)) return k;
  }
  throw new Error('cannot make an ed25519 key pair that reads back; is the host out of entropy?');
}

export function generateKeys(dir: string, vmName: string): SandboxKeys {
  const client = keyPair(`cove-client@${vmName}`);
  const host = keyPair(`cove-host@${vmName}`);
  const write = (file: string, text: string) => fs.writeFileSync(path.join(dir, file), text.endsWith('\n') ? text : text + '\n', { mode: 0o600 });
  write(VM.clientKey, client.private);
  write(VM.clientPubKey, client.public);
  write(VM.hostKey, host.private);
  write(VM.knownHosts, `${contextName(vmName)} ${host.public.split(' ').slice(0, 2).join(' ')}`);
  return { clientPrivate: client.private, clientPublic: client.public, hostPrivate: host.private, hostPublic: host.public };
}

export function readKeys(dir: string): SandboxKeys {
  const read = (file: string) => fs.readFileSync(path.join(dir, file), 'utf8');
  const hostPrivate = read(VM.hostKey);
  const parsed = utils.parseKey(hostPrivate);
  if (parsed instanceof Error) throw new Error(`the sandbox host key in ${dir} cannot be read: ${parsed.message}`);
  const hostPublic = `${parsed.type} ${parsed.getPublicSSH().toString('base64')}`;
  return { clientPrivate: read(VM.clientKey), clientPublic: read(VM.clientPubKey).trim(), hostPrivate, hostPublic };
}

/** An OpenSSH config that reaches the sandbox through coved's ssh.sock. */
export function writeSshConfig(dir: string, vmName: string, proxyCommand: string): void {
  const text = [
    `Host ${contextName(vmName)}`,
    `  HostName ${contextName(vmName)}`,
    '  User root',
    `  IdentityFile ${path.join(dir, VM.clientKey)}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${path.join(dir, VM.knownHosts)}`,
    '  StrictHostKeyChecking yes',
    `  ProxyCommand ${proxyCommand}`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, VM.sshConfig), text, { mode: 0o600 });
}
