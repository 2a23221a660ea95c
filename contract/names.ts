// The rule for sandbox names, in one place: the CLI checks early, coved checks again.
// A name becomes a folder under $COVE_HOME/vms/, part of a unix socket path and a Docker context
// name (`cove-<name>`), so it is kept short and plain.
import * as path from 'node:path';
import { invalidInput } from './errors';

export const NAME_MAX = 40;
const NAME_RE = /^[a-z0-9][a-z0-9-]*$/;

export const NAME_RULE = `a sandbox name is 1 to ${NAME_MAX} characters: lowercase letters, digits and '-', starting with a letter or digit`;

/** Throws a clear error unless `name` is a valid sandbox name. */
export function checkName(name: unknown): string {
  if (typeof name !== 'string') throw invalidInput('the sandbox name must be a string', NAME_RULE);
  const shown = JSON.stringify(name.length > 60 ? name.slice(0, 60) + '…' : name);
  if (name.length === 0) throw invalidInput('the sandbox name is empty', NAME_RULE);
  if (name.length > NAME_MAX) throw invalidInput(`the sandbox name ${shown} is ${name.length} characters long`, NAME_RULE);
  if (!NAME_RE.test(name)) throw invalidInput(`the sandbox name ${shown} is not allowed`, NAME_RULE);
  return name;
}

/** A valid name derived from a folder: its base name, lowercased, other characters turned into '-'. */
export function nameForFolder(dir: string): string {
  const base = path
    .basename(dir)
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, NAME_MAX)
    .replace(/-+$/g, '');
  return base === '' ? 'sandbox' : base;
}
