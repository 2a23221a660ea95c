// What a `cove` command is: its name, its help text and its flags, parsed by node:util.parseArgs.
// Each command lives in commands/<name>.ts and is listed once in commands/index.ts.
import { parseArgs } from 'node:util';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { connect } from '../../contract/client';
import { CoveError } from '../../contract/errors';
import { ErrorCodes } from '../../contract/protocol';
import { UsageError } from './output';

/** A flag as parseArgs takes it, plus the line `cove CMD --help` shows for it. */
export interface Flag {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** The value's placeholder in the help (string flags), e.g. `SIZE`. */
  value?: string;
  help: string;
}

export type Values = Record<string, string | boolean | string[] | undefined>;

export interface Command {
  name: string;
  aliases?: string[];
  /** The arguments after the name, as the usage line shows them, e.g. `NAME [--force]`. */
  usage: string;
  /** One line for `cove help`. */
  summary: string;
  /** More paragraphs for `cove CMD --help`, if the summary is not enough. */
  details?: string;
  flags?: Record<string, Flag>;
  /** Not listed by `cove help` (plumbing such as OpenSSH's ProxyCommand). */
  hidden?: boolean;
  /** Parses its own arguments (exec passes everything after `--` through). */
  rawArgs?: boolean;
  run(positionals: string[], values: Values, args: string[]): Promise<number>;
}

const HELP_FLAG: Flag = { type: 'boolean', short: 'h', help: 'show this help' };

/** The full help of one command. */
export function commandHelp(c: Command): string {
  const lines = [`Usage: cove ${c.name}${c.usage ? ` ${c.usage}` : ''}`, '', c.summary];
  if (c.details) lines.push('', c.details);
  const flags = Object.entries({ ...c.flags, help: HELP_FLAG });
  const left = flags.map(([name, f]) => `${f.short ? `-${f.short}, ` : '    '}--${name}${f.type === 'string' ? ` ${f.value ?? 'VALUE'}` : ''}${f.multiple ? ' (repeatable)' : ''}`);
  const w = Math.max(...left.map((l) => l.length));
  lines.push('', 'Flags:', ...flags.map(([, f], i) => `  ${left[i].padEnd(w)}  ${f.help}`));
  if (c.aliases?.length) lines.push('', `Also: ${c.aliases.map((a) => `cove ${a}`).join(', ')}`);
  return lines.join('\n');
}

/** Parses `args` against the command's flags; an unknown or malformed flag is a UsageError naming it. */
export function parseCommandArgs(c: Command, args: string[]): { positionals: string[]; values: Values } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, f] of Object.entries({ ...c.flags, help: HELP_FLAG })) {
    // parseArgs refuses properties that are present but undefined.
    options[name] = { type: f.type, ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}) };
  }
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: values as Values, positionals };
  } catch (e) {
    throw new UsageError(flagProblem(c, e as Error & { code?: string }));
  }
}

/** parseArgs' message, said plainly: the flag at fault, and where to read about the command's flags. */
function flagProblem(c: Command, e: Error & { code?: string }): string {
  const flag = /'(-[^' ]+)/.exec(e.message)?.[1];
  const see = `see \`cove ${c.name} --help\``;
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag) return `unknown flag ${flag} for cove ${c.name}: ${see}`;
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag) {
    if (/does not take an argument/.test(e.message)) return `the flag ${flag} takes no value: ${see}`;
    if (/ambiguous/.test(e.message)) return `the flag ${flag} needs a value; write one that starts with '-' as ${flag}=-VALUE: ${see}`;
    return `the flag ${flag} needs a value: ${see}`;
  }
  if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return `cove ${c.name} takes no arguments: ${see}`;
  return `${e.message}: ${see}`;
}

/** Runs `fn` with a connection to coved (started on demand), closed afterwards. */
export async function withCoved<T>(fn: (conn: MessageConnection) => Promise<T>): Promise<T> {
  const conn = await connect();
  // A coved that dies mid-request closes the socket and answers nothing: without this the request
  // would never settle, node would run out of work and the command would exit 0 having said nothing.
  let onLost: () => void = () => undefined;
  const lost = new Promise<never>((_, reject) => {
    onLost = () =>
      reject(new CoveError(ErrorCodes.internal, 'coved exited before it answered', 'run the command again: coved restarts on demand and recovers its sandboxes (see coved.log in $COVE_HOME)'));
  });
  lost.catch(() => undefined);
  const sub = conn.onClose(() => onLost());
  try {
    return await Promise.race([fn(conn), lost]);
  } finally {
    sub.dispose();
    conn.dispose();
  }
}

/** The one positional a command takes, or a UsageError. */
export function one(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one ${what}, got ${positionals.length}`);
  return positionals[0];
}
