// `cove up [DIR]`: the sandbox for a folder, created if missing and started if stopped.
import * as path from 'node:path';
import { checkName } from '../../../contract/names';
import { Requests, type UpParams } from '../../../contract/protocol';
import { withCoved, type Command } from '../command';
import { UsageError, parseIntArg, parseSizeMiB, printJson } from '../output';
import { showProgress } from '../progress';

export const up: Command = {
  name: 'up',
  usage: '[DIR] [--name N] [--cpus N] [--memory SIZE] [--disk SIZE] [--mount virtiofs|9p] [--readonly] [--allow-host-port PORT]… [--keep-awake] [--json]',
  summary: 'create the sandbox for DIR (default: .) if missing, start it if stopped; prints the Docker context to use',
  details:
    "The guest cannot reach the host's 127.0.0.1 except the allowed ports, which it reaches at its own\n" +
    '127.0.0.1 (a local registry, say). An idle sandbox may be paused or put to sleep; it wakes on the\n' +
    'next connection to its Docker or SSH socket or a forwarded port (--keep-awake: never).',
  flags: {
    name: { type: 'string', short: 'n', value: 'NAME', help: "the sandbox's name (default: from the folder's name)" },
    cpus: { type: 'string', value: 'N', help: 'virtual CPUs' },
    memory: { type: 'string', short: 'm', value: 'SIZE', help: 'memory, e.g. 2G or 1536M (a bare number is MiB)' },
    disk: { type: 'string', value: 'SIZE', help: "the disk for Docker's data, e.g. 20G (a bare number is GiB)" },
    mount: { type: 'string', value: 'virtiofs|9p', help: 'how the folder is shared (default: virtiofs where it works)' },
    readonly: { type: 'boolean', help: 'share the folder read-only' },
    'allow-host-port': { type: 'string', multiple: true, value: 'PORT', help: "a host 127.0.0.1 port the guest may reach at its own 127.0.0.1" },
    'keep-awake': { type: 'boolean', help: 'never pause or put this sandbox to sleep when it is idle' },
    json: { type: 'boolean', help: 'print the sandbox as JSON (and no progress)' },
  },
  async run(positionals, o) {
    if (positionals.length > 1) throw new UsageError('cove up takes at most one folder');
    const dir = path.resolve(positionals[0] ?? '.');
    if (typeof o.name === 'string') checkName(o.name);
    if (o.mount !== undefined && o.mount !== 'virtiofs' && o.mount !== '9p') throw new UsageError('--mount must be virtiofs or 9p');
    const params: UpParams = {
      dir,
      name: o.name as string | undefined,
      cpus: parseIntArg(o.cpus as string | undefined, '--cpus'),
      memoryMiB: typeof o.memory === 'string' ? parseSizeMiB(o.memory, 'M') : undefined,
      diskGiB: typeof o.disk === 'string' ? Math.ceil(parseSizeMiB(o.disk, 'G') / 1024) : undefined,
      mount: o.mount,
      readonly: o.readonly === true ? true : undefined,
      allowHostPorts: (o['allow-host-port'] as string[] | undefined)?.map((p) => {
        const n = parseIntArg(p, '--allow-host-port');
        if (n === undefined || n < 1 || n > 65535) throw new UsageError(`--allow-host-port ${p} is not a port (1-65535)`);
        return n;
      }),
      keepAwake: o['keep-awake'] === true ? true : undefined,
    };
    const info = await withCoved(async (conn) => {
      const progressToken = `cli-${process.pid}-${Date.now()}`;
      const stop = showProgress(conn, ['image'], o.json === true, progressToken);
      try {
        return await conn.sendRequest(Requests.up, { ...params, progressToken });
      } finally {
        stop();
      }
    });
    if (o.json) printJson(info);
    else {
      process.stdout.write(`sandbox ${info.name} is ${info.state} (${info.accel?.toUpperCase() ?? '?'}, ${info.mount}) for ${info.workspace}\n`);
      if (info.context) process.stdout.write(`Docker context: ${info.context}\n  docker --context ${info.context} ps\n  docker context use ${info.context}\n`);
      else process.stdout.write(`DOCKER_HOST=${info.dockerHost}\n`);
    }
    return 0;
  },
};
