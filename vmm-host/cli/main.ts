// The cove CLI. Control-plane commands talk JSON-RPC to coved (started on demand); exec, shell and
// cp go over SSH to the guest agent. `--json` works on every listing and inspect.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { connect } from '../../contract/client';
import { checkName } from '../../contract/names';
import { Requests, type SandboxInfo } from '../../contract/protocol';
import { coveHome, homeFile, vmFile } from '../../contract/layout';
import { cpCommand, execCommand, logsCommand, shellCommand, sshProxyCommand } from './guest';
import { UsageError, parseIntArg, parseSizeMiB, printJson, printTable, reportError } from './output';
import { showProgress } from './progress';

const HELP = `cove — open a folder in a Docker-ready microVM

Usage:
  cove up [DIR] [--name N] [--cpus N] [--memory SIZE] [--disk SIZE] [--mount virtiofs|9p] [--readonly]
          [--allow-host-port PORT]…
                            create the sandbox for DIR (default: .) if missing, start it if stopped;
                            prints the Docker context to use. The guest cannot reach the host's
                            127.0.0.1 except the allowed ports, at its own 127.0.0.1 (e.g. a registry)
  cove ls [--json]          list sandboxes
  cove inspect NAME [--json]
  cove start NAME           start a stopped sandbox
  cove stop NAME [--force]  stop a sandbox (--force: kill the VM without a clean shutdown)
  cove rm NAME [--force]    remove a sandbox, its disk (Docker data) and its context; the shared
                            folder is never touched (--force: remove it even while it runs)
  cove exec NAME [-t] [-i] -- CMD [ARG…]
                            run a command in the guest (in the shared folder); exit code propagated
  cove shell NAME           an interactive shell in the guest
  cove logs NAME [--follow] the guest console
  cove publish NAME -p HOST:GUEST   forward host 127.0.0.1:HOST to guest port GUEST
  cove unpublish NAME -p HOST
  cove ports NAME [--json]  forwarded ports
  cove cp SRC DST           copy between host and guest; one side is NAME:/absolute/path
  cove ssh-config NAME      print an OpenSSH config that reaches the sandbox (ssh -F FILE cove-NAME)
  cove doctor [--json]      check the host: qemu, virtiofsd, KVM, docker CLI and plugins
  cove image build [--force] | cove image ls [--json]
  cove image prune          remove images that no sandbox uses (the newest is kept)
  cove daemon               run coved in the foreground
  cove version

State lives in $COVE_HOME (default ~/.local/share/cove).`;

type Opts = Record<string, string | boolean | string[] | undefined>;

async function withCoved<T>(fn: (conn: MessageConnection) => Promise<T>): Promise<T> {
  const conn = await connect();
  try {
    return await fn(conn);
  } finally {
    conn.dispose();
  }
}

function one(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one ${what}, got ${positionals.length}`);
  return positionals[0];
}

function printSandbox(s: SandboxInfo): void {
  const rows: Array<[string, string]> = [
    ['name', s.name],
    ['state', s.state + (s.dockerReady ? ' (docker ready)' : '')],
    ['workspace', `${s.workspace} (${s.mount}${s.readonly ? ', read-only' : ''})`],
    ['context', s.context ?? '(none: docker CLI not found)'],
    ['docker host', s.dockerHost],
    ['accel', s.accel ?? '-'],
    ['cpus / memory / disk', `${s.cpus} / ${s.memoryMiB} MiB / ${s.diskGiB} GiB`],
    ['image', s.image],
    ['ports', s.ports.map((p) => `127.0.0.1:${p.hostPort}->${p.guestPort}${p.error ? ` (${p.error})` : ''}`).join(', ') || '-'],
    ['boot', s.bootSeconds === null ? '-' : `${s.bootSeconds} s`],
    ['folder', s.dir],
  ];
  if (s.problem) rows.push(['problem', s.problem]);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
  if (s.consoleTail) process.stdout.write(`--- console (last lines) ---\n${s.consoleTail}\n`);
}

function parsePortSpec(spec: string | undefined, needGuest: boolean): { hostPort: number; guestPort: number } {
  if (!spec) throw new UsageError(needGuest ? 'missing -p HOST:GUEST' : 'missing -p HOST');
  const m = needGuest ? /^(\d{1,5}):(\d{1,5})$/.exec(spec) : /^(\d{1,5})(?::\d{1,5})?$/.exec(spec);
  if (!m) throw new UsageError(`cannot read the port ${JSON.stringify(spec)}: use ${needGuest ? 'HOST:GUEST, e.g. 8080:80' : 'HOST'}`);
  const hostPort = Number(m[1]);
  const guestPort = needGuest ? Number(m[2]) : 0;
  for (const p of needGuest ? [hostPort, guestPort] : [hostPort]) if (p < 1 || p > 65535) throw new UsageError(`port ${p} is out of range 1-65535`);
  return { hostPort, guestPort };
}

async function up(positionals: string[], o: Opts): Promise<number> {
  if (positionals.length > 1) throw new UsageError('cove up takes at most one folder');
  const dir = path.resolve(positionals[0] ?? '.');
  if (typeof o.name === 'string') checkName(o.name);
  const params = {
    dir,
    name: o.name as string | undefined,
    cpus: parseIntArg(o.cpus as string | undefined, '--cpus'),
    memoryMiB: typeof o.memory === 'string' ? parseSizeMiB(o.memory, 'M') : undefined,
    diskGiB: typeof o.disk === 'string' ? Math.ceil(parseSizeMiB(o.disk, 'G') / 1024) : undefined,
    mount: o.mount as 'virtiofs' | '9p' | undefined,
    readonly: o.readonly === true ? true : undefined,
    allowHostPorts: o['allow-host-port'] === undefined ? undefined : (o['allow-host-port'] as unknown as string[]).map((p) => {
      const n = parseIntArg(p, '--allow-host-port');
      if (n === undefined || n < 1 || n > 65535) throw new UsageError(`--allow-host-port ${p} is not a port (1-65535)`);
      return n;
    }),
  };
  if (params.mount !== undefined && params.mount !== 'virtiofs' && params.mount !== '9p') throw new UsageError('--mount must be virtiofs or 9p');
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
}

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(HELP + '\n');
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === 'exec') {
    const dd = rest.indexOf('--');
    const before = dd >= 0 ? rest.slice(0, dd) : rest.slice(0, 1);
    const command = dd >= 0 ? rest.slice(dd + 1) : rest.slice(1);
    const { values, positionals } = parseArgs({ args: before, allowPositionals: true, options: { tty: { type: 'boolean', short: 't' }, interactive: { type: 'boolean', short: 'i' } } });
    return execCommand(one(positionals, 'sandbox name'), command, { tty: values.tty === true, interactive: values.interactive === true });
  }
  const options = {
    json: { type: 'boolean' },
    force: { type: 'boolean', short: 'f' },
    name: { type: 'string', short: 'n' },
    cpus: { type: 'string' },
    memory: { type: 'string', short: 'm' },
    disk: { type: 'string' },
    mount: { type: 'string' },
    readonly: { type: 'boolean' },
    follow: { type: 'boolean' },
    publish: { type: 'string', short: 'p' },
    'allow-host-port': { type: 'string', multiple: true },
  } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, options });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const o = parsed.values as Opts;
  const pos = parsed.positionals;
  switch (cmd) {
    case 'up':
      return up(pos, o);
    case 'ls':
    case 'list': {
      const list = await withCoved((c) => c.sendRequest(Requests.list));
      if (o.json) printJson(list);
      else if (list.length === 0) process.stdout.write('no sandboxes yet: run `cove up` in a folder\n');
      else printTable([['NAME', 'STATE', 'ACCEL', 'MOUNT', 'CONTEXT', 'PORTS', 'WORKSPACE'], ...list.map((s) => [s.name, s.state, s.accel ?? '-', s.mount, s.context ?? '-', s.ports.map((p) => `${p.hostPort}->${p.guestPort}`).join(',') || '-', s.workspace])]);
      return 0;
    }
    case 'inspect': {
      const name = checkName(one(pos, 'sandbox name'));
      const info = await withCoved((c) => c.sendRequest(Requests.inspect, { name }));
      if (o.json) printJson(info);
      else printSandbox(info);
      return 0;
    }
    case 'start': {
      const name = checkName(one(pos, 'sandbox name'));
      const info = await withCoved(async (c) => {
        const stop = showProgress(c, [name], false);
        try {
          return await c.sendRequest(Requests.start, { name });
        } finally {
          stop();
        }
      });
      process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
      return 0;
    }
    case 'stop': {
      const name = checkName(one(pos, 'sandbox name'));
      const info = await withCoved((c) => c.sendRequest(Requests.stop, { name, force: o.force === true }));
      process.stdout.write(`sandbox ${info.name} is ${info.state}\n`);
      return 0;
    }
    case 'rm':
    case 'remove': {
      const name = checkName(one(pos, 'sandbox name'));
      await withCoved((c) => c.sendRequest(Requests.remove, { name, force: o.force === true }));
      process.stdout.write(`sandbox ${name} removed\n`);
      return 0;
    }
    case 'publish': {
      const name = checkName(one(pos, 'sandbox name'));
      const { hostPort, guestPort } = parsePortSpec(o.publish as string | undefined, true);
      const fwd = await withCoved((c) => c.sendRequest(Requests.publish, { name, hostPort, guestPort }));
      if (fwd.error) throw new Error(fwd.error);
      process.stdout.write(`127.0.0.1:${fwd.hostPort} -> ${name}:${fwd.guestPort}\n`);
      return 0;
    }
    case 'unpublish': {
      const name = checkName(one(pos, 'sandbox name'));
      const { hostPort } = parsePortSpec(o.publish as string | undefined, false);
      await withCoved((c) => c.sendRequest(Requests.unpublish, { name, hostPort }));
      return 0;
    }
    case 'ports': {
      const name = checkName(one(pos, 'sandbox name'));
      const info = await withCoved((c) => c.sendRequest(Requests.inspect, { name }));
      if (o.json) printJson(info.ports);
      else printTable([['HOST', 'GUEST', 'ORIGIN', 'STATUS'], ...info.ports.map((p) => [`127.0.0.1:${p.hostPort}`, String(p.guestPort), p.origin, p.error ?? 'ok'])]);
      return 0;
    }
    case 'logs':
      await logsCommand(one(pos, 'sandbox name'), o.follow === true);
      return 0;
    case 'shell':
      return shellCommand(one(pos, 'sandbox name'));
    case 'cp':
      if (pos.length !== 2) throw new UsageError('cove cp SRC DST');
      await cpCommand(pos[0], pos[1]);
      return 0;
    case 'ssh-proxy':
      return sshProxyCommand(one(pos, 'sandbox name'));
    case 'ssh-config': {
      const name = checkName(one(pos, 'sandbox name'));
      const file = vmFile(name, 'sshConfig');
      if (!fs.existsSync(file)) throw new UsageError(`there is no sandbox named ${name}`);
      process.stdout.write(`# ssh -F ${file} cove-${name}\n${fs.readFileSync(file, 'utf8')}`);
      return 0;
    }
    case 'doctor': {
      const r = await withCoved((c) => c.sendRequest(Requests.doctor));
      if (o.json) printJson(r);
      else {
        for (const ch of r.checks) process.stdout.write(`${ch.ok ? 'ok  ' : 'FAIL'}  ${ch.name}: ${ch.detail}${!ch.ok && ch.hint ? `\n      hint: ${ch.hint}` : ''}\n`);
        process.stdout.write(`accel: ${r.accel ?? 'unknown'} (${r.accelDetail})\n`);
      }
      return r.checks.every((c) => c.ok) ? 0 : 1;
    }
    case 'image': {
      const sub = pos[0];
      if (sub === 'build') {
        const r = await withCoved(async (c) => {
          const stop = showProgress(c, ['image'], o.json === true);
          try {
            return await c.sendRequest(Requests.imageBuild, { force: o.force === true });
          } finally {
            stop();
          }
        });
        if (o.json) printJson(r);
        else process.stdout.write(`${r.cached ? 'used the cached image' : 'built the image'} ${path.basename(r.image.dir)} in ${r.seconds.toFixed(1)} s\n`);
        return 0;
      }
      if (sub === 'ls') {
        const list = await withCoved((c) => c.sendRequest(Requests.imageList));
        if (o.json) printJson(list);
        else printTable([['IMAGE', 'BUILT', 'DOCKER', 'KERNEL', 'DIR'], ...list.map((i) => [`${i.tier}-${i.hash}`, i.builtAt, i.versions.docker ?? '-', i.versions.kernel ?? '-', i.dir])]);
        return 0;
      }
      if (sub === 'prune') {
        const removed = await withCoved((c) => c.sendRequest(Requests.imagePrune));
        if (o.json) printJson(removed);
        else process.stdout.write(removed.length ? removed.map((d) => `removed ${d}\n`).join('') : 'nothing to remove\n');
        return 0;
      }
      throw new UsageError('cove image build [--force] | cove image ls [--json] | cove image prune');
    }
    case 'daemon':
      process.env.COVE_HOME = coveHome();
      require('../coved/main');
      return new Promise<number>(() => undefined);
    case 'version': {
      const v = await withCoved((c) => c.sendRequest(Requests.version));
      process.stdout.write(`cove ${v.version} (coved pid ${v.pid}, protocol ${v.protocol}, home ${v.home}, log ${homeFile('covedLog')})\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Stdin may hold the loop open after a command that piped it.
    setImmediate(() => process.exit(code));
  },
  (e) => {
    process.exit(reportError(e));
  },
);
