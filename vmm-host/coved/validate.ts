// Checks on what arrives over the API: coved trusts no field of a request. Each failure is an
// invalid-input error that names the field and what it should be.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { invalidInput } from '../../contract/errors';

export type Params = Record<string, unknown>;

export function asParams(value: unknown): Params {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw invalidInput('the request parameters must be a JSON object');
  return value as Params;
}

export function optInt(p: Params, key: string, min: number, max: number, unit = ''): number | undefined {
  const v = p[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalidInput(`"${key}" must be a whole number`);
  if (v < min || v > max) throw invalidInput(`"${key}" is ${v}${unit}; it must be between ${min}${unit} and ${max}${unit}`);
  return v;
}

export function reqInt(p: Params, key: string, min: number, max: number): number {
  const v = optInt(p, key, min, max);
  if (v === undefined) throw invalidInput(`"${key}" is required`);
  return v;
}

export function optBool(p: Params, key: string): boolean | undefined {
  const v = p[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalidInput(`"${key}" must be true or false`);
  return v;
}

export function optEnum<T extends string>(p: Params, key: string, allowed: readonly T[]): T | undefined {
  const v = p[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw invalidInput(`"${key}" must be one of: ${allowed.join(', ')}`);
  return v as T;
}

export function optPorts(p: Params, key: string): number[] | undefined {
  const v = p[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length > 64) throw invalidInput(`"${key}" must be a list of at most 64 ports`);
  for (const port of v) {
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw invalidInput(`"${key}" holds ${JSON.stringify(port)}, which is not a port (1-65535)`);
  }
  return [...new Set(v as number[])].sort((a, b) => a - b);
}

export function reqString(p: Params, key: string, maxLen = 4096): string {
  const v = p[key];
  if (typeof v !== 'string') throw invalidInput(`"${key}" is required and must be a string`);
  if (v.length > maxLen) throw invalidInput(`"${key}" is longer than ${maxLen} characters`);
  return v;
}

/**
 * The folder to share: absolute, existing, a directory, not `/`, free of characters that the
 * docker CLI's `-v a:b` syntax or a mount table cannot carry, and apart from $COVE_HOME (whose keys
 * must not be shared into a guest).
 */
export function checkWorkspace(dir: string, home: string): string {
  if (dir === '') throw invalidInput('the folder path is empty', 'pass the folder to open, e.g. `cove up .`');
  if (!path.isAbsolute(dir)) throw invalidInput(`the folder path ${JSON.stringify(dir)} is not absolute`, 'pass an absolute path');
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(dir)) throw invalidInput('the folder path contains control characters', 'rename the folder');
  if (dir.includes(':')) throw invalidInput(`the folder path ${JSON.stringify(dir)} contains ':'`, "docker's -v syntax cannot carry ':' in a path; rename the folder");
  const resolved = path.resolve(dir);
  if (resolved === '/') throw invalidInput('the folder is / (the whole host file system)', 'open a project folder instead');
  let st: fs.Stats;
  try {
    st = fs.statSync(resolved);
  } catch {
    throw invalidInput(`the folder ${resolved} does not exist`, 'create it first or check the path');
  }
  if (!st.isDirectory()) throw invalidInput(`${resolved} is not a folder`, 'pass the folder that contains it instead');
  const h = path.resolve(home);
  const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith('/') ? b : b + '/');
  if (inside(resolved, h) || inside(h, resolved)) {
    throw invalidInput(`the folder ${resolved} contains or is inside Cove's own state (${h})`, "sharing it would hand the guest other sandboxes' keys; open a project folder instead");
  }
  return resolved;
}
