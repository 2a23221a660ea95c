// `cove shell NAME`: an interactive shell in the guest.
import { one, type Command } from '../command';
import { shellCommand } from '../guest';

export const shell: Command = {
  name: 'shell',
  usage: 'NAME',
  summary: 'an interactive shell in the guest, in the shared folder',
  run: (positionals) => shellCommand(one(positionals, 'sandbox name')),
};
