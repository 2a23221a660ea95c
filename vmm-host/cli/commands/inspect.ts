// `cove inspect NAME`: everything coved knows about one sandbox.
import { formatMountSpec } from '../../../contract/mount-spec';
import { escapeGuestLines, escapeGuestText } from '../../../contract/escape';
import { checkName } from '../../../contract/names';
import { Requests, type SandboxInfo } from '../../../contract/protocol';
import { one, withCoved, type Command } from '../command';
import { printJson } from '../output';

/** The state as a person reads it; `long` adds what a paused or sleeping sandbox does next. */
export function stateText(s: SandboxInfo, long: boolean): string {
  if (s.state === 'running') return s.dockerReady && long ? 'running (docker ready)' : 'running';
  if (s.state === 'paused') return long ? 'paused (in memory, no CPU; wakes on the next connection)' : 'paused';
  if (s.state === 'asleep') return long ? 'asleep (saved to disk, no VM process; wakes on the next connection)' : 'asleep';
  return s.state;
}

const BOOT_KINDS: Record<NonNullable<SandboxInfo['bootKind']>, string> = {
  cold: 'cold boot',
  template: "restored from the image's template",
  wake: 'woken from sleep',
};

/** The rows `cove inspect` prints, label and value. */
export function sandboxRows(s: SandboxInfo): Array<[string, string]> {
  const boot = s.bootSeconds === null ? '-' : `${s.bootSeconds} s`;
  const rows: Array<[string, string]> = [
    ['name', s.name],
    ['state', stateText(s, true)],
    ['workspace', `${s.workspace} (${s.mount}${s.readonly ? ', read-only' : ''})`],
    ['also shared', s.mounts.map((m) => `${formatMountSpec(m)}${m.kind === 'file' ? ' (file)' : ''}`).join(', ') || '-'],
    ['bind guard', s.bindGuard ? 'on (containers may bind-mount only shared paths and the guest\'s own)' : 'off'],
    ['context', s.context ?? '(none: docker CLI not found)'],
    ['docker host', s.dockerHost],
    ['accel', s.accel ?? '-'],
    ['cpus / memory / disk', `${s.cpus} / ${s.memoryMiB} MiB / ${s.diskGiB} GiB`],
    ['image', s.image],
    ['ports', s.ports.map((p) => `127.0.0.1:${p.hostPort}->${p.guestPort}${p.error ? ` (${p.error})` : ''}`).join(', ') || '-'],
    ['boot', s.bootKind ? `${boot} (${BOOT_KINDS[s.bootKind]})` : boot],
    ['keep awake', s.keepAwake ? 'yes' : 'no'],
    ['folder', s.dir],
  ];
  // Notes and problems can quote the guest: escaped like every guest text on a terminal.
  if (s.mountsNote) rows.push(['mounts', s.mountsNote]);
  if (s.warmNote) rows.push(['warm start', escapeGuestText(s.warmNote)]);
  if (s.problem) rows.push(['problem', escapeGuestText(s.problem)]);
  return rows;
}

function printSandbox(s: SandboxInfo): void {
  const rows = sandboxRows(s);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
  if (s.consoleTail) process.stdout.write(`--- console (last lines) ---\n${escapeGuestLines(s.consoleTail)}\n`);
}

export const inspect: Command = {
  name: 'inspect',
  usage: 'NAME [--json]',
  summary: "one sandbox in full: state, how it last came up (cold, template, wake), resources, ports, folder",
  flags: { json: { type: 'boolean', help: 'print the sandbox as JSON' } },
  async run(positionals, o) {
    const name = checkName(one(positionals, 'sandbox name'));
    const info = await withCoved((c) => c.sendRequest(Requests.inspect, { name }));
    if (o.json) printJson(info);
    else printSandbox(info);
    return 0;
  },
};
