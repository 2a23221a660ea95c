// `cove stop NAME`: a clean shutdown of the guest (or, with --force, the end of the VM).
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';

export const stop: Command = {
  name: 'stop',
  usage: 'NAME [--force]',
  summary: 'stop a sandbox',
  flags: { force: { type: 'boolean', short: 'f', help: 'kill the VM without a clean shutdown' } },
  async run(positionals, o) {
    const name = checkName(one(positionals, 'sandbox name'));
    const info = await withCoved((c) => c.sendRequest(Requests.stop, { name, force: o.force === true }));
    process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
    return 0;
  },
};
