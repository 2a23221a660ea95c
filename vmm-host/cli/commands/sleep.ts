// `cove sleep NAME`: saves a running sandbox to disk and ends its VM processes.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { showProgress } from '../progress';

export const sleep: Command = {
  name: 'sleep',
  usage: 'NAME',
  summary: 'save a running sandbox to disk and end its VM; the next connection to it (or cove start) wakes it',
  async run(positionals) {
    const name = checkName(one(positionals, 'sandbox name'));
    const info = await withCoved(async (c) => {
      const stop = showProgress(c, [name], false);
      try {
        return await c.sendRequest(Requests.sleep, { name });
      } finally {
        stop();
      }
    });
    process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
    return 0;
  },
};
