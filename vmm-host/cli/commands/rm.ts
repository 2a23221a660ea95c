// `cove rm NAME`: removes a sandbox's folder, disk and context; never the shared folder.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';

export const rm: Command = {
  name: 'rm',
  aliases: ['remove'],
  usage: 'NAME [--force]',
  summary: 'remove a sandbox, its disk (Docker data) and its context; the shared folder is never touched',
  flags: { force: { type: 'boolean', short: 'f', help: 'remove it even while it runs' } },
  async run(positionals, o) {
    const name = checkName(one(positionals, 'sandbox name'));
    await withCoved((c) => c.sendRequest(Requests.remove, { name, force: o.force === true }));
    process.stdout.write(`sandbox ${name} removed\n`);
    return 0;
  },
};
