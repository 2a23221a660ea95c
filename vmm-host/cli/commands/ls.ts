// `cove ls`: every sandbox, one line each.
import { Requests } from '../../../contract/protocol';
import { withCoved, type Command } from '../command';
import { UsageError, printJson, printTable } from '../output';
import { stateText } from './inspect';

export const ls: Command = {
  name: 'ls',
  aliases: ['list'],
  usage: '[--json]',
  summary: 'list sandboxes: state (running, paused, asleep, stopped…), how the VM last came up, accel, mount, context, ports',
  flags: { json: { type: 'boolean', help: 'print the list as JSON' } },
  async run(positionals, o) {
    if (positionals.length > 0) throw new UsageError('cove ls takes no arguments');
    const list = await withCoved((c) => c.sendRequest(Requests.list));
    if (o.json) printJson(list);
    else if (list.length === 0) process.stdout.write('no sandboxes yet: run `cove up` in a folder\n');
    else {
      printTable([
        ['NAME', 'STATE', 'BOOT', 'ACCEL', 'MOUNT', 'CONTEXT', 'PORTS', 'WORKSPACE'],
        ...list.map((s) => [s.name, stateText(s, false), s.bootKind ?? '-', s.accel ?? '-', s.mount, s.context ?? '-', s.ports.map((p) => `${p.hostPort}->${p.guestPort}`).join(',') || '-', s.mounts.length > 0 ? `${s.workspace} (+${s.mounts.length} more)` : s.workspace]),
      ]);
    }
    return 0;
  },
};
