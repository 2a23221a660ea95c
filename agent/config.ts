// The part of the guest config (docs/guest.md, "The config disk") that the agent reads.
import * as fs from 'node:fs';
import { utils, type ParsedKey } from 'ssh2';

export interface AgentConfig {
  /** The OpenSSH private host key (ed25519), as text. */
  hostKey: string;
  /** Parsed authorized public keys. */
  authorizedKeys: ParsedKey[];
  name?: string;
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
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`the agent config ${file} is not JSON: ${(err as Error).message}`);
  }
  const obj = doc as { hostKey?: unknown; authorizedKeys?: unknown; name?: unknown };
  if (typeof obj.hostKey !== 'string' || obj.hostKey.trim() === '') {
    throw new ConfigError(`the agent config ${file} has no hostKey (an OpenSSH private key)`);
  }
  const hostParsed = utils.parseKey(obj.hostKey);
  if (hostParsed instanceof Error || (Array.isArray(hostParsed) && hostParsed.length === 0)) {
    throw new ConfigError(`the hostKey in ${file} is not a usable private key: ${hostParsed instanceof Error ? hostParsed.message : 'empty'}`);
  }
  if (!Array.isArray(obj.authorizedKeys) || obj.authorizedKeys.length === 0) {
    throw new ConfigError(`the agent config ${file} has no authorizedKeys; nobody could log in`);
  }
  const authorizedKeys: ParsedKey[] = [];
  for (const [i, line] of obj.authorizedKeys.entries()) {
    if (typeof line !== 'string') throw new ConfigError(`authorizedKeys[${i}] in ${file} is not a string`);
    const parsed = utils.parseKey(line);
    if (parsed instanceof Error) throw new ConfigError(`authorizedKeys[${i}] in ${file} is not a public key: ${parsed.message}`);
    for (const key of Array.isArray(parsed) ? parsed : [parsed]) authorizedKeys.push(key);
  }
  return { hostKey: obj.hostKey, authorizedKeys, name: typeof obj.name === 'string' ? obj.name : undefined };
}
