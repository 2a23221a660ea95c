// `cove ports NAME`: the sandbox's forwarded ports and whether each could be bound.
import { checkName } from '../../../contract/names';
import { Requests } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { printJson, printTable } from '../output';

export const ports: Command = {
  name: 'ports',
  usage: 'NAME [--json]',
  summary: 'forwarded ports: automatic (ports containers publish) and manual (cove publish)',
  flags: { json: { type: 'boolean', help: 'print the ports as JSON' } },
  async run(positionals, o) {
    const name = checkName(one(positionals, 'sandbox name'));
    const info = await withCoved((c) => c.sendRequest(Requests.inspect, { name }));
    if (o.json) printJson(info.ports);
    else printTable([['HOST', 'GUEST', 'ORIGIN', 'STATUS'], ...info.ports.map((p) => [`127.0.0.1:${p.hostPort}`, String(p.guestPort), p.origin, p.error ?? 'ok'])]);
    return 0;
  },
};
