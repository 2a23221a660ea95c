// `cove doctor`: what the host has and lacks; exits 1 when a check fails.
import { Requests } from '../../../contract/protocol';
import { withCoved, type Command } from '../command';
import { printJson } from '../output';

export const doctor: Command = {
  name: 'doctor',
  usage: '[--json]',
  summary: 'check the host: qemu, virtiofsd, KVM, docker CLI and plugins',
  flags: { json: { type: 'boolean', help: 'print the checks as JSON' } },
  async run(_positionals, o) {
    const r = await withCoved((c) => c.sendRequest(Requests.doctor));
    if (o.json) printJson(r);
    else {
      for (const ch of r.checks) process.stdout.write(`${ch.ok ? 'ok  ' : 'FAIL'}  ${ch.name}: ${ch.detail}${!ch.ok && ch.hint ? `\n      hint: ${ch.hint}` : ''}\n`);
      process.stdout.write(`accel: ${r.accel ?? 'unknown'} (${r.accelDetail})\n`);
    }
    return r.checks.every((c) => c.ok) ? 0 : 1;
  },
};
