// `cove logs NAME`: the guest's serial console.
import { one, type Command } from '../command';
import { logsCommand } from '../guest';

export const logs: Command = {
  name: 'logs',
  usage: 'NAME [--follow]',
  summary: "the guest console (the kernel's and the init's lines)",
  flags: { follow: { type: 'boolean', help: 'keep printing what is appended' } },
  async run(positionals, o) {
    await logsCommand(one(positionals, 'sandbox name'), o.follow === true);
    return 0;
  },
};
