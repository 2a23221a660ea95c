// The cove CLI's entry. Control-plane commands talk JSON-RPC to coved (started on demand); exec,
// shell and cp go over SSH to the guest agent. Each command is one file in commands/, with its own
// help text and flags; this file only finds the command and runs it.
import { commandHelp, parseCommandArgs, type Command } from './command';
import { COMMANDS, findCommand } from './commands';
import { UsageError, reportError } from './output';

/** `cove help`: every command with its one-line summary. */
function overview(): string {
  const shown = COMMANDS.filter((c) => !c.hidden);
  const w = Math.max(...shown.map((c) => c.name.length));
  return [
    'cove — open a folder in a Docker-ready microVM',
    '',
    'Usage: cove COMMAND [ARG…]      cove COMMAND --help shows its flags',
    '',
    'Commands:',
    ...shown.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    'State lives in $COVE_HOME (default ~/.local/share/cove).',
  ].join('\n');
}

function help(topic: string | undefined): number {
  if (topic === undefined) {
    process.stdout.write(overview() + '\n');
    return 0;
  }
  const c = findCommand(topic);
  if (!c) throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
  process.stdout.write(commandHelp(c) + '\n');
  return 0;
}

async function run(argv: string[]): Promise<number> {
  if (argv.length === 0) {
    process.stdout.write(overview() + '\n');
    return 2;
  }
  const [name, ...args] = argv;
  if (name === 'help' || name === '--help' || name === '-h') return help(args[0]);
  const c: Command | undefined = findCommand(name);
  if (!c) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  if (c.rawArgs) return c.run([], {}, args);
  const { positionals, values } = parseCommandArgs(c, args);
  if (values.help) return help(c.name);
  return c.run(positionals, values, args);
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Stdin may hold the loop open after a command that piped it.
    setImmediate(() => process.exit(code));
  },
  (e: unknown) => {
    process.exit(reportError(e));
  },
);
