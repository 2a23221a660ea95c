// `cove unpublish NAME -p HOST`: ends a forward.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { parsePortSpec } from '../output';

export const unpublish: Command = {
  name: 'unpublish',
  usage: 'NAME -p HOST',
  summary: 'stop forwarding host 127.0.0.1:HOST',
  flags: { publish: { type: 'string', short: 'p', value: 'HOST', help: 'the host port' } },
  async run(positionals, o) {
    const name = checkName(one(positionals, 'sandbox name'));
    const { hostPort } = parsePortSpec(o.publish as string | undefined, false);
    await withCoved((c) => c.sendRequest(Requests.unpublish, { name, hostPort }));
    return 0;
  },
};
