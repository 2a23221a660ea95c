// `cove exec NAME -- CMD [ARG…]`: a command in the guest, in the shared folder, over SSH.
import { commandHelp, one, parseCommandArgs, type Command } from '../command';
import { execCommand } from '../guest';

export const exec: Command = {
  name: 'exec',
  usage: 'NAME [-t] [-i] -- CMD [ARG…]',
  summary: 'run a command in the guest (in the shared folder); its exit code is propagated',
  details: 'Everything after `--` is the command, flags included. Without `--`, the first argument is the\nsandbox and the rest the command.',
  flags: {
    tty: { type: 'boolean', short: 't', help: 'give the command a terminal' },
    interactive: { type: 'boolean', short: 'i', help: 'forward stdin even when it is a terminal' },
  },
  rawArgs: true,
  async run(_positionals, _values, args) {
    const dd = args.indexOf('--');
    const before = dd >= 0 ? args.slice(0, dd) : args.slice(0, 1);
    const command = dd >= 0 ? args.slice(dd + 1) : args.slice(1);
    const { values, positionals } = parseCommandArgs(exec, before);
    if (values.help) {
      process.stdout.write(commandHelp(exec) + '\n');
      return 0;
    }
    return execCommand(one(positionals, 'sandbox name'), command, { tty: values.tty === true, interactive: values.interactive === true });
  },
};
