// Every knob of the agent, read from the command line first, then the environment, then the
// defaults from the guest contract (contract/guest.ts). The overrides exist so the agent can run
// on a development host (tests) with a plain unix socket, a FIFO pair standing in for the
// virtio-serial port and a fake dockerd.
import * as path from 'node:path';
import { GUEST } from '../contract/guest';
import { ASLR_SYSCTL } from './aslr';

/** The init's run folder, which holds the config (GUEST.config) and the agent's socket. */
const GUEST_RUN_DIR = path.dirname(GUEST.config);

export interface AgentOptions {
  /** The config JSON (host key, authorized keys). `--config`, `COVE_AGENT_CONFIG`. */
  configPath: string;
  /** The unix socket to serve SSH on, or null for none. `--socket`, `COVE_AGENT_SOCK` (`none`). */
  socketPath: string | null;
  /**
   * The agent channel port: `auto` (find the virtio-serial port named `cove.agent`), `none`, or a
   * path opened read-write. `--port`, `COVE_AGENT_PORT`.
   */
  port: string;
  /** A separate path to write to, when `port` is only read (a FIFO pair in tests). `--port-out`, `COVE_AGENT_PORT_OUT`. */
  portOut: string | null;
  /**
   * The data channel port (HTTP/2 to dockerd and guest ports): `auto` (find the virtio-serial port
   * named `cove.data`), `none`, or a path opened read-write. `--data-port`, `COVE_AGENT_DATA_PORT`.
   */
  dataPort: string;
  /** A separate path to write the data channel to (tests). `--data-port-out`, `COVE_AGENT_DATA_PORT_OUT`. */
  dataPortOut: string | null;
  /** Where virtio-serial ports are listed. `--virtio-ports`, `COVE_AGENT_VIRTIO_PORTS`. */
  virtioPortsDir: string;
  /** dockerd's socket, polled with GET /_ping. `--docker-sock`, `COVE_AGENT_DOCKER_SOCK`. */
  dockerSock: string;
  /** Written when dockerd first answers. `--ready-marker`, `COVE_AGENT_READY_MARKER`. */
  readyMarker: string;
  /** The folder holding `tcp` and `tcp6` listings. `--proc-net`, `COVE_AGENT_PROC_NET`. */
  procNet: string;
  /** Poll period of the port and dockerd watchers, in ms. `--poll-ms`, `COVE_AGENT_POLL_MS`. */
  pollMs: number;
  /**
   * The init's run folder: `config-device` (the path of the config disk), `mounts`,
   * `mount-failed`, `config-failed`. `--run-dir`, `COVE_AGENT_RUN_DIR`.
   */
  runDir: string;
  /** The kernel RNG device the control ops reseed. `--urandom`, `COVE_AGENT_URANDOM`. */
  urandom: string;
  /** Where `hostname` and `hosts` are written on rebirth. `--etc`, `COVE_AGENT_ETC`. */
  etcDir: string;
  /**
   * The PATH on which the control ops find perl, mount, umount and sync (tests put stub scripts
   * first). `--system-path`, `COVE_AGENT_SYSTEM_PATH`.
   */
  systemPath: string;
  /** The sysctl the config's `aslr` is written to. `--aslr-sysctl`, `COVE_AGENT_ASLR_SYSCTL`. */
  aslrSysctl: string;
  /** The sysctl rebirth writes the hostname to. `--hostname-sysctl`, `COVE_AGENT_HOSTNAME_SYSCTL`. */
  hostnameSysctl: string;
}

const FLAGS: Partial<Record<string, keyof AgentOptions>> = {
  '--config': 'configPath',
  '--socket': 'socketPath',
  '--port': 'port',
  '--port-out': 'portOut',
  '--data-port': 'dataPort',
  '--data-port-out': 'dataPortOut',
  '--virtio-ports': 'virtioPortsDir',
  '--docker-sock': 'dockerSock',
  '--ready-marker': 'readyMarker',
  '--proc-net': 'procNet',
  '--poll-ms': 'pollMs',
  '--run-dir': 'runDir',
  '--urandom': 'urandom',
  '--etc': 'etcDir',
  '--system-path': 'systemPath',
  '--aslr-sysctl': 'aslrSysctl',
  '--hostname-sysctl': 'hostnameSysctl',
};

/** The system PATH the init gives its services. */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): AgentOptions {
  const given = new Map<keyof AgentOptions, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const key = FLAGS[flag];
    if (!key) throw new UsageError(`unknown argument ${JSON.stringify(arg)}; known: ${Object.keys(FLAGS).join(' ')}`);
    const value = eq > 0 ? arg.slice(eq + 1) : argv.at(++i);
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    given.set(key, value);
  }
  const pick = (key: keyof AgentOptions, envName: string, fallback: string): string =>
    given.get(key) ?? (env[envName] || fallback);

  const socket = pick('socketPath', 'COVE_AGENT_SOCK', GUEST.agentSock);
  const portOut = pick('portOut', 'COVE_AGENT_PORT_OUT', '');
  const dataPortOut = pick('dataPortOut', 'COVE_AGENT_DATA_PORT_OUT', '');
  const pollMs = Number(pick('pollMs', 'COVE_AGENT_POLL_MS', '1000'));
  if (!Number.isFinite(pollMs) || pollMs < 10) throw new UsageError(`--poll-ms must be a number of milliseconds >= 10`);
  return {
    configPath: pick('configPath', 'COVE_AGENT_CONFIG', GUEST.config),
    socketPath: socket === 'none' ? null : socket,
    port: pick('port', 'COVE_AGENT_PORT', 'auto'),
    portOut: portOut === '' ? null : portOut,
    dataPort: pick('dataPort', 'COVE_AGENT_DATA_PORT', 'auto'),
    dataPortOut: dataPortOut === '' ? null : dataPortOut,
    virtioPortsDir: pick('virtioPortsDir', 'COVE_AGENT_VIRTIO_PORTS', '/sys/class/virtio-ports'),
    dockerSock: pick('dockerSock', 'COVE_AGENT_DOCKER_SOCK', GUEST.dockerSock),
    readyMarker: pick('readyMarker', 'COVE_AGENT_READY_MARKER', GUEST.readyMarker),
    procNet: pick('procNet', 'COVE_AGENT_PROC_NET', '/proc/net'),
    pollMs,
    runDir: pick('runDir', 'COVE_AGENT_RUN_DIR', GUEST_RUN_DIR),
    urandom: pick('urandom', 'COVE_AGENT_URANDOM', '/dev/urandom'),
    etcDir: pick('etcDir', 'COVE_AGENT_ETC', '/etc'),
    systemPath: pick('systemPath', 'COVE_AGENT_SYSTEM_PATH', SYSTEM_PATH),
    aslrSysctl: pick('aslrSysctl', 'COVE_AGENT_ASLR_SYSCTL', ASLR_SYSCTL),
    hostnameSysctl: pick('hostnameSysctl', 'COVE_AGENT_HOSTNAME_SYSCTL', '/proc/sys/kernel/hostname'),
  };
}
