// `cove start NAME`: boots a stopped sandbox, or wakes a paused or sleeping one.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { showProgress } from '../progress';

export const start: Command = {
  name: 'start',
  usage: 'NAME',
  summary: 'start a stopped sandbox (or wake a paused or sleeping one)',
  async run(positionals) {
    const name = checkName(one(positionals, 'sandbox name'));
    const info = await withCoved(async (c) => {
      const stop = showProgress(c, [name], false);
      try {
        return await c.sendRequest(Requests.start, { name });
      } finally {
        stop();
      }
    });
    process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
    return 0;
  },
};
