// `cove pause NAME`: stops a running sandbox's vCPUs; the next connection to it resumes it.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { showProgress } from '../progress';

export const pause: Command = {
  name: 'pause',
  usage: 'NAME',
  summary: 'pause a running sandbox (no CPU, memory kept); the next connection to it (or cove start) resumes it',
  async run(positionals) {
    const name = checkName(one(positionals, 'sandbox name'));
    const info = await withCoved(async (c) => {
      const stop = showProgress(c, [name], false);
      try {
        return await c.sendRequest(Requests.pause, { name });
      } finally {
        stop();
      }
    });
    process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
    return 0;
  },
};
