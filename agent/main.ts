// The guest agent: `node /opt/cove/agent.js [--flag value ...]` (flags and COVE_AGENT_* variables
// in options.ts). It serves SSH on the agent channel (the virtio-serial port `cove.agent`) and on
// /run/cove/agent.sock, watches dockerd and the listening ports, and streams events. The init
// restarts it if it dies; everything it needs is read again at start.
import './threadpool';
import { GUEST } from '../contract/guest';
import { setAslr } from './aslr';
import { ConfigError, loadConfig } from './config';
import { Control } from './control';
import { MuxServer } from './mux';
import { EventHub } from './hub';
import { errorText, log } from './log';
import { parseOptions, UsageError, type AgentOptions } from './options';
import { AgentServer } from './server';
import { StdinPort } from './stdin-port';
import { DataPortTransport } from './transport/data-port';
import { findVirtioPort, PortTransport } from './transport/port';
import type { Transport } from './transport/transport';
import { UnixTransport } from './transport/unix';
import { AGENT_VERSION } from './version';
import { watchDockerd } from './watch/dockerd';
import { watchPorts } from './watch/ports';

/** How long the shutdown event gets to reach subscribers before the agent exits. */
const SHUTDOWN_FLUSH_MS = 300;

export async function startAgent(opts: AgentOptions): Promise<{ stop(reason: string): Promise<void> }> {
  const config = loadConfig(opts.configPath);
  setAslr(config.aslr, opts.aslrSysctl);
  const hub = new EventHub(opts.runDir);
  const server = new AgentServer(config, hub);
  const control = new Control(opts, (next) => server.reconfigure(next));
  server.control = (channel, id) => control.serve(channel, id);
  control.start();

  const transports: Transport[] = [];
  if (opts.socketPath) transports.push(new UnixTransport(opts.socketPath));
  if (opts.port !== 'none') {
    transports.push(new PortTransport({ port: opts.port, portOut: opts.portOut, portsDir: opts.virtioPortsDir, portName: GUEST.agentPortName }));
  }
  for (const t of transports) {
    await t.start((stream, label) => server.serve(stream, label));
    log(`listening on ${t.name}`);
  }
  // The data channel: HTTP/2 streams to dockerd and guest ports, beside SSH (PROTOCOL.md).
  const stdinPort = new StdinPort(() => findVirtioPort(opts.virtioPortsDir, GUEST.stdinPortName));
  const mux = new MuxServer(opts.dockerSock, opts.socketPath, stdinPort, opts.systemPath);
  if (opts.dataPort !== 'none') {
    const data = new DataPortTransport({ port: opts.dataPort, portOut: opts.dataPortOut, portsDir: opts.virtioPortsDir, portName: GUEST.dataPortName, bridgePath: opts.systemPath });
    transports.push(data);
    await data.start((stream, label) => mux.serve(stream, label));
  }
  const stopPorts = watchPorts(hub, opts.procNet, opts.pollMs);
  const stopDockerd = watchDockerd(hub, opts.dockerSock, opts.readyMarker, opts.pollMs);

  return {
    async stop(reason: string): Promise<void> {
      log(`shutting down: ${reason}`);
      hub.emit({ type: 'shutdown', reason });
      stopPorts();
      stopDockerd();
      control.stop();
      for (const t of transports) t.close();
      await new Promise((resolve) => setTimeout(resolve, hub.subscribers > 0 ? SHUTDOWN_FLUSH_MS : 0));
      server.endAll();
      mux.endAll();
    },
  };
}

async function main(): Promise<void> {
  let opts: AgentOptions;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`cove-agent: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  log(`cove-agent ${AGENT_VERSION} starting (node ${process.version}, pid ${process.pid})`);
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    agent = await startAgent(opts);
  } catch (err) {
    log(`cannot start: ${errorText(err)}`);
    // The init restarts the agent with back-off; a missing config may appear by then.
    process.exit(err instanceof ConfigError ? 78 : 1);
  }
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      void agent.stop(`agent received ${signal}`).finally(() => process.exit(0));
    });
  }
  // A session's stdio may break under us (a client gone mid-write); that is no reason to die.
  process.on('uncaughtException', (err) => log(`uncaught: ${err.stack ?? errorText(err)}`));
}

if (require.main === module) void main();
