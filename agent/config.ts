// The part of the guest config (docs/guest.md, "The config disk") that the agent reads: at start
// from /run/cove/config.json (copied there by the init), and on `rebirth` straight off the config
// disk, decoded the way the init decodes it.
import * as fs from 'node:fs';
import { utils, type ParsedKey } from 'ssh2';
import { CONFIG_DISK_MAGIC, CONFIG_DISK_SIZE, type GuestMount } from '../contract/config-disk';
import { GUEST } from '../contract/guest';

export interface AgentConfig {
  /** The OpenSSH private host key (ed25519), as text. */
  hostKey: string;
  /** Parsed authorized public keys. */
  authorizedKeys: ParsedKey[];
  name?: string;
  /** The guest's hostname: `hostname`, else `name`, else `cove` (as the init's config-env.js). */
  hostname: string;
  /** The shares to mount, defaults filled in as the init fills them. */
  mounts: GuestMount[];
  /** Address randomization on or off; undefined: the config does not say. */
  aslr?: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read the agent config ${file} (${(err as Error).message}); the init copies it there from the config disk`);
  }
  return parseConfig(text, file);
}

/** A hostname the init and /etc/hosts can take: letters, digits, dots and dashes. */
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/;
/** A mount tag as qemu takes it. */
const TAG = /^[A-Za-z0-9_.-]{1,31}$/;

/** Checks a config document (JSON text); `source` names it in error messages. */
export function parseConfig(text: string, source: string): AgentConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    // JSON.parse quotes part of the text in its message; the text holds a private key.
    const at = /position (\d+)/.exec((err as Error).message);
    throw new ConfigError(`the agent config ${source} is not JSON${at ? ` (at byte ${at[1]})` : ''}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ConfigError(`the agent config ${source} is not a JSON object`);
  const obj = doc as { hostKey?: unknown; authorizedKeys?: unknown; name?: unknown; hostname?: unknown; mounts?: unknown; aslr?: unknown };
  if (typeof obj.hostKey !== 'string' || obj.hostKey.trim() === '') {
    throw new ConfigError(`the agent config ${source} has no hostKey (an OpenSSH private key)`);
  }
  const hostParsed = utils.parseKey(obj.hostKey);
  if (hostParsed instanceof Error || (Array.isArray(hostParsed) && hostParsed.length === 0)) {
    throw new ConfigError(`the hostKey in ${source} is not a usable private key: ${hostParsed instanceof Error ? hostParsed.message : 'empty'}`);
  }
  if (!Array.isArray(obj.authorizedKeys) || obj.authorizedKeys.length === 0) {
    throw new ConfigError(`the agent config ${source} has no authorizedKeys; nobody could log in`);
  }
  const authorizedKeys: ParsedKey[] = [];
  for (const [i, line] of obj.authorizedKeys.entries()) {
    if (typeof line !== 'string') throw new ConfigError(`authorizedKeys[${i}] in ${source} is not a string`);
    const parsed = utils.parseKey(line);
    if (parsed instanceof Error) throw new ConfigError(`authorizedKeys[${i}] in ${source} is not a public key: ${parsed.message}`);
    // ssh2's types say one key, but a line can parse to several.
    const keys: unknown = parsed;
    for (const key of Array.isArray(keys) ? (keys as ParsedKey[]) : [parsed]) authorizedKeys.push(key);
  }
  const name = typeof obj.name === 'string' ? obj.name : undefined;
  const hostname = (typeof obj.hostname === 'string' && obj.hostname) || name || 'cove';
  if (!HOSTNAME.test(hostname)) {
    throw new ConfigError(`the hostname ${JSON.stringify(hostname)} in ${source} is not a valid hostname (letters, digits, dots and dashes, at most 63)`);
  }
  if (obj.aslr !== undefined && typeof obj.aslr !== 'boolean') throw new ConfigError(`aslr in ${source} is not true or false`);
  return { hostKey: obj.hostKey, authorizedKeys, name, hostname, mounts: parseMounts(obj.mounts, source), ...(obj.aslr !== undefined ? { aslr: obj.aslr } : {}) };
}

function parseMounts(value: unknown, source: string): GuestMount[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ConfigError(`mounts in ${source} is not a list`);
  return value.map((m: unknown, i): GuestMount => {
    const where = `mounts[${i}] in ${source}`;
    if (typeof m !== 'object' || m === null) throw new ConfigError(`${where} is not an object`);
    const { tag = GUEST.workspaceTag, type = 'virtiofs', path, readonly = false, file } = m as Record<string, unknown>;
    if (typeof path !== 'string' || !path.startsWith('/') || /[\0\n\r]/.test(path)) {
      throw new ConfigError(`${where} has no usable path (an absolute path on one line)`);
    }
    if (typeof tag !== 'string' || !TAG.test(tag)) throw new ConfigError(`${where} has a bad tag ${JSON.stringify(tag)} (letters, digits, _ . -)`);
    if (type !== 'virtiofs' && type !== '9p') throw new ConfigError(`${where} has type ${JSON.stringify(type)}; it must be virtiofs or 9p`);
    if (typeof readonly !== 'boolean') throw new ConfigError(`${where} has a readonly that is not true or false`);
    if (file !== undefined && (typeof file !== 'string' || file === '' || file === '.' || file === '..' || /[/\0\n\r]/.test(file))) {
      throw new ConfigError(`${where} has a bad file ${JSON.stringify(file)} (one plain file name)`);
    }
    return { tag, type, path, readonly, ...(file !== undefined ? { file } : {}) };
  });
}

/**
 * Reads the config document off the config disk: the magic `COVECFG1\n`, then the JSON up to the
 * first NUL, within the disk's 1 MiB (the same decoding as the init's `head | tail | tr`).
 */
export function readConfigDisk(device: string): string {
  let fd: number;
  try {
    fd = fs.openSync(device, 'r');
  } catch (err) {
    throw new ConfigError(`cannot open the config disk ${device} (${(err as Error).message}); is the clone's config disk attached in the template's slot?`);
  }
  const buf = Buffer.alloc(CONFIG_DISK_SIZE);
  let got = 0;
  try {
    // A block device reports size 0, so read until the disk's size or EOF.
    while (got < buf.length) {
      const n = fs.readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const data = buf.subarray(0, got);
  if (data.subarray(0, CONFIG_DISK_MAGIC.length).toString('latin1') !== CONFIG_DISK_MAGIC) {
    throw new ConfigError(`${device} does not start with the config disk magic ${JSON.stringify(CONFIG_DISK_MAGIC)}; coved must attach the clone's config disk in the config slot`);
  }
  let end = data.indexOf(0, CONFIG_DISK_MAGIC.length);
  if (end < 0) end = data.length;
  return data.subarray(CONFIG_DISK_MAGIC.length, end).toString('utf8');
}
