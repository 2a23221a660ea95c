// coved's SSH connection to one guest's agent, over the agent channel (qemu's unix socket for the
// virtio-serial port). It reconnects when the link dies (the agent restarted, the VM stalled) and
// hands out channels: streamlocal to guest unix sockets, direct-tcpip to guest ports, exec.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { Client, utils, type ClientChannel } from 'ssh2';
import { skipToBanner } from '../../contract/banner-sync';
import { EVENTS_SUBSYSTEM, type AgentEvent } from '../../contract/events';
import { CONTROL_MAX_REQUEST_BYTES, CONTROL_SUBSYSTEM, type ControlAnswer, type ControlRequest } from '../../contract/control';
import { agentEventProblems } from '../../contract/events-check';
import { EVENT_LINE_BOUNDS, limitedLog, readBoundedLines } from './bounded-lines';
import { pipeBothWays } from './relay';

/** Most bytes kept of an exec's stdout and of its stderr; the rest is dropped. */
export const EXEC_MAX_OUTPUT_BYTES = 1024 * 1024;
/** Most connections the agent may have open at once from guest ports to allowed host ports. */
export const MAX_HOST_PORT_CONNECTIONS = 128;

export interface AgentLinkOptions {
  /** qemu's end of the agent channel. */
  agentSock: string;
  /** The guest's public host key (OpenSSH form); any other key is refused. */
  hostKey: string;
  /** coved's private client key (OpenSSH form). */
  clientKey: string;
  log: (msg: string) => void;
  /**
   * Host ports the guest may reach (the allow list): the agent listens on guest 127.0.0.1:<port>
   * and each connection becomes one to host 127.0.0.1:<port>. Nothing else on the host is reachable.
   */
  allowHostPorts?: number[];
  /** How long one SSH handshake may take once the agent has answered before. */
  handshakeTimeoutMs: number;
  /**
   * How long the first handshake may take: the guest may still be booting, and giving up early
   * costs more, since the agent only notices a host that left when its next read returns EOF.
   */
  firstHandshakeTimeoutMs: number;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Events: 'up' (SSH ready), 'down' (link lost), 'event' (an AgentEvent).
 * The guest side resets its SSH session when the host end of the port closes, so every reconnect
 * closes the socket first and waits a moment before it connects again.
 */
export class AgentLink extends EventEmitter {
  private client: Client | null = null;
  private socket: net.Socket | null = null;
  private readyWaiters: Array<() => void> = [];
  private running = false;
  private everUp = false;
  private generation = 0;
  private pinned: Buffer;
  private holdTimer: NodeJS.Timeout | null = null;

  constructor(private readonly opts: AgentLinkOptions) {
    super();
    const parsed = utils.parseKey(opts.hostKey);
    if (parsed instanceof Error) throw new Error(`the pinned host key cannot be read: ${parsed.message}`);
    this.pinned = parsed.getPublicSSH();
  }

  /**
   * Future connections pin `hostKey` and log in with `clientKey` (after a template clone's rebirth
   * the guest has its own keys; the connection made with the template's keys stays up).
   */
  rekey(hostKey: string, clientKey: string): void {
    const parsed = utils.parseKey(hostKey);
    if (parsed instanceof Error) throw new Error(`the pinned host key cannot be read: ${parsed.message}`);
    this.pinned = parsed.getPublicSSH();
    this.opts.clientKey = clientKey;
  }

  /**
   * While the VM is paused nothing answers the SSH keepalive; hold() keeps the link from giving
   * up on it (the keepalive count is reset every second) until release().
   */
  hold(): void {
    if (this.holdTimer) return;
    this.holdTimer = setInterval(() => (this.client as unknown as { _resetKA?: () => void } | null)?._resetKA?.(), 1000);
  }

  release(): void {
    if (this.holdTimer) clearInterval(this.holdTimer);
    this.holdTimer = null;
    (this.client as unknown as { _resetKA?: () => void } | null)?._resetKA?.();
  }

  get isUp(): boolean {
    return this.client !== null;
  }

  /** Starts connecting, and keeps reconnecting until close(). */
  start(): void {
    if (this.running) return;
    this.running = true;
    void this.loop();
  }

  close(): void {
    this.release();
    this.running = false;
    this.teardown();
  }

  /** Resolves when the link is up, or rejects after `timeoutMs` with `what` in the message. */
  waitUp(timeoutMs: number, what = 'the guest agent'): Promise<void> {
    if (this.client) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== done);
        reject(new Error(`${what} did not answer within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.readyWaiters.push(done);
    });
  }

  /** Drops the current connection so the loop makes a fresh one (used after a VM stall). */
  reset(reason: string): void {
    if (!this.client && !this.socket) return;
    this.opts.log(`agent link reset: ${reason}`);
    this.teardown();
  }

  private teardown(): void {
    const wasUp = this.client !== null;
    this.generation++;
    this.client?.end();
    this.client = null;
    this.socket?.destroy();
    this.socket = null;
    if (wasUp) this.emit('down');
  }

  private async loop(): Promise<void> {
    // The agent must see the old host leave (EOF) before bytes of a new one arrive, or both
    // sessions' bytes mix; so every retry waits at least this long.
    const minBackoff = 1500;
    let backoff = minBackoff;
    while (this.running) {
      if (this.client) {
        await sleep(200);
        continue;
      }
      const gen = ++this.generation;
      try {
        await this.connectOnce(gen);
        backoff = minBackoff;
      } catch (e) {
        // close() may have run while this attempt was awaited.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
        if (!this.running) return;
        this.opts.log(`agent link: ${(e as Error).message}; retrying in ${backoff} ms`);
        this.socket?.destroy();
        this.socket = null;
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  }

  private connectOnce(gen: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.opts.agentSock);
      this.socket = sock;
      const client = new Client();
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        client.end();
        sock.destroy();
        reject(err);
      };
      sock.once('error', (err) => fail(new Error(`cannot open the agent channel: ${err.message}`)));
      sock.once('connect', () => {
        client.connect({
          // Bytes the agent wrote for an earlier host may precede its banner: skip them.
          sock: skipToBanner(sock),
          username: 'root',
          privateKey: this.opts.clientKey,
          readyTimeout: this.everUp ? this.opts.handshakeTimeoutMs : this.opts.firstHandshakeTimeoutMs,
          // The agent is not OpenSSH, but it serves OpenSSH's streamlocal extension.
          strictVendor: false,
          // A restarted agent only speaks once the host sends something, so a short keepalive is
          // what notices it (its banner arrives mid-session and the link resets). A stalled VM
          // (SIGSTOP, a laptop asleep) gets two minutes before the link is given up.
          keepaliveInterval: 3000,
          keepaliveCountMax: 40,
          hostVerifier: (key: Buffer) => key.equals(this.pinned),
        });
      });
      let cipher = '';
      client.once('handshake', (negotiated: { cs: { cipher: string } }) => (cipher = negotiated.cs.cipher));
      client.once('ready', () => {
        if (settled || gen !== this.generation) return fail(new Error('superseded'));
        settled = true;
        this.everUp = true;
        this.client = client;
        this.opts.log(`agent link up (${cipher})`);
        this.subscribeEvents(client);
        this.openHostPorts(client);
        for (const w of this.readyWaiters.splice(0)) w();
        this.emit('up');
        resolve();
      });
      client.on('error', (err) => {
        if (!settled) return fail(new Error(`SSH handshake with the agent failed: ${err.message}`));
        this.opts.log(`agent link error: ${err.message}`);
      });
      client.once('close', () => {
        if (!settled) return fail(new Error('the agent channel closed during the handshake'));
        if (this.client === client) {
          this.opts.log('agent link closed');
          this.client = null;
          this.socket?.destroy();
          this.socket = null;
          this.emit('down');
        }
      });
    });
  }

  private subscribeEvents(client: Client): void {
    client.subsys(EVENTS_SUBSYSTEM, (err, stream) => {
      if (err) {
        this.opts.log(`cannot open the event stream: ${err.message}`);
        return;
      }
      // One JSON event per line; anything the schema does not accept is logged and dropped, so a
      // hostile or broken guest cannot hand coved an event of a shape it does not expect. Lines are
      // bounded in size and rate (bounded-lines.ts), and so are the log lines they cause.
      const problem = limitedLog((m) => this.opts.log(m), 20);
      readBoundedLines(
        stream,
        EVENT_LINE_BOUNDS,
        (raw) => {
          const line = raw.trim();
          if (line === '') return;
          let value: unknown;
          try {
            value = JSON.parse(line);
          } catch {
            problem(`agent sent a line that is not JSON: ${JSON.stringify(line.slice(0, 200))}`);
            return;
          }
          const problems = agentEventProblems(value);
          if (problems.length === 0) {
            const event: AgentEvent = value as AgentEvent;
            this.emit('event', event);
          } else {
            problem(`agent sent an event the schema refuses (${problems.slice(0, 3).join('; ')}): ${JSON.stringify(line.slice(0, 200))}`);
          }
        },
        (m) => problem(`agent event stream: ${m}`),
      );
      stream.stderr.resume();
    });
  }

  private openHostPorts(client: Client): void {
    const allowed = new Set(this.opts.allowHostPorts ?? []);
    if (allowed.size === 0) return;
    let open = 0;
    const refused = limitedLog((m) => this.opts.log(m), 10);
    client.on('tcp connection', (info, accept, reject) => {
      // Only the ports asked for: the agent cannot widen the list by asking for others.
      if (!allowed.has(info.destPort)) return reject();
      // And only so many at once, so a flood of channel opens cannot exhaust coved's descriptors.
      if (open >= MAX_HOST_PORT_CONNECTIONS) {
        refused(`the guest has ${open} connections open to allowed host ports; refusing more`);
        return reject();
      }
      open++;
      let counted = true;
      const done = () => {
        if (counted) open--;
        counted = false;
      };
      const host = net.connect({ host: '127.0.0.1', port: info.destPort, allowHalfOpen: true });
      host.once('close', done);
      host.once('error', (err) => {
        refused(`host port ${info.destPort} for the guest: ${err.message}`);
        done();
        reject();
      });
      host.once('connect', () => pipeBothWays(accept(), host));
    });
    for (const port of allowed) {
      client.forwardIn('127.0.0.1', port, (err) => {
        if (err) this.opts.log(`cannot open guest 127.0.0.1:${port} for host port ${port}: ${err.message}`);
        else this.opts.log(`guest 127.0.0.1:${port} reaches host 127.0.0.1:${port} (allow list)`);
      });
    }
  }

  private requireClient(): Client {
    if (!this.client) throw new Error('the agent link is down');
    return this.client;
  }

  streamLocal(socketPath: string): Promise<ClientChannel> {
    const client = this.requireClient();
    return new Promise((resolve, reject) =>
      client.openssh_forwardOutStreamLocal(socketPath, (err, ch) => (err ? reject(err) : resolve(ch))),
    );
  }

  forwardTcp(host: string, port: number): Promise<ClientChannel> {
    const client = this.requireClient();
    return new Promise((resolve, reject) => client.forwardOut('127.0.0.1', 0, host, port, (err, ch) => (err ? reject(err) : resolve(ch))));
  }

  /** One request on the agent's control channel (agent/PROTOCOL.md, `cove-control`). */
  control(req: ControlRequest, timeoutMs: number): Promise<ControlAnswer> {
    const client = this.requireClient();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the agent did not answer the ${req.op} request within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
      client.subsys(CONTROL_SUBSYSTEM, (err, ch) => {
        if (err) {
          clearTimeout(timer);
          return reject(new Error(`cannot open the agent's control channel: ${err.message}`));
        }
        let buf = '';
        ch.on('data', (d: Buffer) => {
          buf += d.toString('utf8');
          if (buf.length > CONTROL_MAX_REQUEST_BYTES) ch.close();
        });
        ch.stderr.resume();
        ch.on('close', () => {
          clearTimeout(timer);
          const line = buf.split('\n')[0] ?? '';
          try {
            resolve(JSON.parse(line) as ControlAnswer);
          } catch {
            reject(new Error(`the agent's answer to ${req.op} is not JSON: ${JSON.stringify(line.slice(0, 200))}`));
          }
        });
        ch.write(JSON.stringify(req) + '\n');
      });
    });
  }

  /** Runs a command in the guest and collects its output (for short commands only). */
  exec(command: string, timeoutMs: number): Promise<ExecResult> {
    const client = this.requireClient();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`\`${command}\` did not finish within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
      client.exec(command, (err, ch) => {
        if (err) {
          clearTimeout(timer);
          return reject(err);
        }
        let stdout = '';
        let stderr = '';
        let code: number | null = null;
        let signal: string | null = null;
        // Bounded: the guest decides how much a command prints.
        ch.on('data', (d: Buffer) => {
          if (stdout.length < EXEC_MAX_OUTPUT_BYTES) stdout += d.toString().slice(0, EXEC_MAX_OUTPUT_BYTES - stdout.length);
        });
        ch.stderr.on('data', (d: Buffer) => {
          if (stderr.length < EXEC_MAX_OUTPUT_BYTES) stderr += d.toString().slice(0, EXEC_MAX_OUTPUT_BYTES - stderr.length);
        });
        ch.on('exit', (c: number | null, s?: string) => {
          code = c;
          signal = s ?? null;
        });
        ch.on('close', () => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr });
        });
      });
    });
  }
}
