// `cove publish NAME -p HOST:GUEST`: forwards a host 127.0.0.1 port to a guest port by hand.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { parsePortSpec } from '../output';

export const publish: Command = {
  name: 'publish',
  usage: 'NAME -p HOST:GUEST',
  summary: 'forward host 127.0.0.1:HOST to guest port GUEST',
  flags: { publish: { type: 'string', short: 'p', value: 'HOST:GUEST', help: 'the ports, e.g. 8080:80' } },
  async run(positionals, o) {
    const name = checkName(one(positionals, 'sandbox name'));
    const { hostPort, guestPort } = parsePortSpec(o.publish as string | undefined, true);
    const fwd = await withCoved((c) => c.sendRequest(Requests.publish, { name, hostPort, guestPort }));
    if (fwd.error) throw new Error(fwd.error);
    process.stdout.write(`127.0.0.1:${fwd.hostPort} -> ${name}:${fwd.guestPort}\n`);
    return 0;
  },
};
