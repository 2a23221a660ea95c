// `cove up [DIR]`: the sandbox for a folder, created if missing and started if stopped.
import * as os from 'node:os';
import * as path from 'node:path';
import { MountSpecError, formatMountSpec, parseMountSpec } from '../../../contract/mount-spec';
import { checkName } from '../../../contract/names';
import { Requests, type PluginsResult, type UpParams } from '../../../contract/protocol';
import { withCoved, type Command } from '../command';
import { UsageError, parseIntArg, parseSizeMiB, printJson } from '../output';
import { showProgress } from '../progress';

export const up: Command = {
  name: 'up',
  usage: '[DIR] [--name N] [--cpus N] [--memory SIZE] [--disk SIZE] [--mount HOST[:GUEST][:ro]]… [--no-mounts] [--mount-type virtiofs|9p] [--readonly] [--allow-host-port PORT]… [--keep-awake] [--bind-guard on|off] [--no-plugins] [--json]',
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
    mount: { type: 'string', multiple: true, value: 'HOST[:GUEST][:ro]', help: 'one more folder or file to share, at the same path unless GUEST is given (repeatable; changes take effect on the next start)' },
    'mount-type': { type: 'string', value: 'virtiofs|9p', help: 'how the folder is shared (default: 9p from the warm-start template; virtiofs boots cold)' },
    readonly: { type: 'boolean', help: 'share the folder read-only' },
    'allow-host-port': { type: 'string', multiple: true, value: 'PORT', help: "a host 127.0.0.1 port the guest may reach at its own 127.0.0.1" },
    'bind-guard': { type: 'string', value: 'on|off', help: 'off: containers may bind-mount paths that are not shared (they see the guest\'s own)' },
    'no-mounts': { type: 'boolean', help: 'share no more than the folder (drops the --mount list of an existing sandbox on its next start)' },
    'no-plugins': { type: 'boolean', help: "do not install the image's compose and buildx plugins where the docker CLI lacks them" },
    'keep-awake': { type: 'boolean', help: 'never pause or put this sandbox to sleep when it is idle' },
    json: { type: 'boolean', help: 'print the sandbox as JSON (and no progress)' },
  },
  async run(positionals, o) {
    if (positionals.length > 1) throw new UsageError('cove up takes at most one folder');
    const dir = path.resolve(positionals[0] ?? '.');
    if (typeof o.name === 'string') checkName(o.name);
    const mountType = o['mount-type'];
    if (mountType !== undefined && mountType !== 'virtiofs' && mountType !== '9p') throw new UsageError('--mount-type must be virtiofs or 9p');
    const mountSpecs = (o.mount as string[] | undefined) ?? [];
    for (const m of mountSpecs) {
      if (m === 'virtiofs' || m === '9p') throw new UsageError(`--mount takes HOST[:GUEST][:ro]; the way the folder is shared is now --mount-type ${m}`);
    }
    if (o['no-mounts'] === true && mountSpecs.length > 0) throw new UsageError('--no-mounts and --mount cannot go together');
    const guard = o['bind-guard'];
    if (guard !== undefined && guard !== 'on' && guard !== 'off') throw new UsageError('--bind-guard must be on or off');
    const params: UpParams = {
      dir,
      name: o.name as string | undefined,
      cpus: parseIntArg(o.cpus as string | undefined, '--cpus'),
      memoryMiB: typeof o.memory === 'string' ? parseSizeMiB(o.memory, 'M') : undefined,
      diskGiB: typeof o.disk === 'string' ? Math.ceil(parseSizeMiB(o.disk, 'G') / 1024) : undefined,
      mount: mountType,
      readonly: o.readonly === true ? true : undefined,
      mounts: o['no-mounts'] === true ? [] : mountSpecs.length > 0 ? mountSpecs.map(parseMount) : undefined,
      bindGuard: guard === undefined ? undefined : guard === 'on',
      allowHostPorts: (o['allow-host-port'] as string[] | undefined)?.map((p) => {
        const n = parseIntArg(p, '--allow-host-port');
        if (n === undefined || n < 1 || n > 65535) throw new UsageError(`--allow-host-port ${p} is not a port (1-65535)`);
        return n;
      }),
      keepAwake: o['keep-awake'] === true ? true : undefined,
    };
    const { info, plugins } = await withCoved(async (conn) => {
      const progressToken = `cli-${process.pid}-${Date.now()}`;
      const stop = showProgress(conn, ['image'], o.json === true, progressToken);
      let sandbox;
      try {
        sandbox = await conn.sendRequest(Requests.up, { ...params, progressToken });
      } finally {
        stop();
      }
      // The docker CLI needs compose and buildx of its own to use them through the context (where
      // there is no docker CLI, there is nothing to give them to). The sandbox is up either way.
      let plugins: PluginsResult | string | null = null;
      if (o['no-plugins'] !== true && sandbox.context !== null) {
        plugins = await conn.sendRequest(Requests.plugins, {}).catch((e: unknown) => `could not install the docker CLI plugins: ${e instanceof Error ? e.message : String(e)}`);
      }
      return { info: sandbox, plugins };
    });
    if (o.json) printJson(info);
    else {
      process.stdout.write(`sandbox ${info.name} is ${info.state} (${info.accel?.toUpperCase() ?? '?'}, ${info.mount}) for ${info.workspace}\n`);
      for (const m of info.mounts) process.stdout.write(`  also shared: ${formatMountSpec(m)}${m.kind === 'file' ? ' (file)' : ''}\n`);
      if (info.mountsNote) process.stdout.write(`${info.mountsNote}\n`);
      if (typeof plugins === 'string') process.stdout.write(`${plugins}\n`);
      else if (plugins && plugins.installed.length > 0) {
        const what = plugins.plugins.filter((p) => plugins.installed.includes(p.name)).map((p) => `${p.name} ${p.version ?? ''}`.trim());
        process.stdout.write(`installed the image's docker ${what.join(' and ')} plugin${what.length > 1 ? 's' : ''} into ${plugins.dir} (the docker CLI had none; --no-plugins: never)\n`);
      }
      if (!info.bindGuard) process.stdout.write('bind guard off: containers may bind-mount paths that are not shared (they see the guest\'s own)\n');
      if (info.context) process.stdout.write(`Docker context: ${info.context}\n  docker --context ${info.context} ps\n  docker context use ${info.context}\n`);
      else process.stdout.write(`DOCKER_HOST=${info.dockerHost}\n`);
    }
    return 0;
  },
};

function parseMount(spec: string): NonNullable<UpParams['mounts']>[number] {
  try {
    return parseMountSpec(spec, process.cwd(), os.homedir());
  } catch (e) {
    if (e instanceof MountSpecError) throw new UsageError(e.message);
    throw e;
  }
}
