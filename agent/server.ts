// The agent's SSH service (RFC 4253/4254, served by ssh2): public-key authentication against the
// config's authorized keys, then sessions (exec, shell, sftp, cove-events), direct-streamlocal to
// guest unix sockets and direct-tcpip to guest ports. PROTOCOL.md describes it for clients.
import { timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { Server, type Connection, type ParsedKey } from 'ssh2';
import type { AgentConfig } from './config';
import type { ConnectionContext, ControlHandler } from './context';
import { RemoteForwards, openStreamlocal, openTcpip } from './forward';
import type { EventHub } from './hub';
import { errorText, log } from './log';
import { handleSession } from './session';
import { AGENT_BANNER_PREFIX } from '../contract/banner-sync';
import { AGENT_VERSION } from './version';

export class AgentServer {
  private server: Server;
  private readonly connections = new Set<Connection>();
  control: ControlHandler | undefined;

  constructor(config: AgentConfig, private readonly hub: EventHub) {
    this.server = this.makeServer(config);
  }

  /**
   * Takes a new host key and authorized keys (rebirth). ssh2 fixes the host keys when its Server
   * is made, so every connection from now on goes to a new Server with the new config; the
   * connections of the old one (made with the old keys, e.g. the one asking for this) go on until
   * they end. Throws, changing nothing, when ssh2 refuses the host key.
   */
  reconfigure(config: AgentConfig): void {
    this.server = this.makeServer(config);
  }

  private makeServer(config: AgentConfig): Server {
    // ssh2 parses the host key here and throws on one it cannot use.
    const server = new Server({ hostKeys: [config.hostKey], ident: `${AGENT_BANNER_PREFIX.slice('SSH-2.0-'.length)}${AGENT_VERSION}` });
    server.on('connection', (conn, info) => this.onConnection(conn, config.authorizedKeys, info.ip));
    server.on('error', (err: Error) => log(`ssh: server error: ${errorText(err)}`));
    return server;
  }

  /** Serves one SSH connection on a byte stream from any transport. */
  serve(stream: Duplex, label: string): void {
    (stream as Duplex & { label?: string }).label = label;
    this.server.injectSocket(stream as never);
  }

  /** Ends every SSH connection (used at shutdown, after the shutdown event is sent). */
  endAll(): void {
    for (const conn of this.connections) conn.end();
  }

  private onConnection(conn: Connection, authorized: ParsedKey[], ip: string): void {
    // ssh2 passes the socket we injected; its label names the connection in the log.
    const sock = (conn as unknown as { _sock?: { label?: string } })._sock;
    const label = sock?.label ?? (ip || 'ssh');
    const ctx: ConnectionContext = { label, hub: this.hub, control: this.control };
    this.connections.add(conn);
    let user = '';
    log(`${label}: connection opened`);

    conn.on('authentication', (auth) => {
      user = auth.username;
      if (auth.method !== 'publickey') {
        auth.reject(['publickey']);
        return;
      }
      const key = authorized.find((k) => k.type === auth.key.algo && sameBytes(k.getPublicSSH(), auth.key.data));
      if (!key) {
        log(`${label}: refused ${auth.key.algo} key for user ${JSON.stringify(auth.username)}: not authorized`);
        auth.reject(['publickey']);
        return;
      }
      if (!auth.signature || !auth.blob) {
        auth.accept(); // The client only asks whether this key would do; it signs next.
        return;
      }
      if (!key.verify(auth.blob, auth.signature, auth.hashAlgo)) {
        log(`${label}: refused ${auth.key.algo} key for user ${JSON.stringify(auth.username)}: bad signature`);
        auth.reject(['publickey']);
        return;
      }
      auth.accept();
    });

    conn.on('ready', () => {
      log(`${label}: authenticated as ${JSON.stringify(user)}`);
      conn.on('session', (accept) => handleSession(accept(), ctx));
      conn.on('openssh.streamlocal', (accept, reject, info) => openStreamlocal(accept, reject, info.socketPath, ctx));
      conn.on('tcpip', (accept, reject, info) => openTcpip(accept, reject, info.destIP, info.destPort, ctx));
      // Remote forwarding on guest loopback only (the host's allow list); nothing else global.
      const remote = new RemoteForwards(conn, ctx);
      conn.on('close', () => remote.closeAll());
      conn.on('request', (accept, reject, requestName, info) => {
        // ssh2 types the name as the two forwarding requests; a client can send any other.
        const name: string = requestName;
        if (name === 'tcpip-forward') {
          const { bindAddr, bindPort } = info;
          remote.add(bindAddr, bindPort).then(
            (port) => accept?.(port),
            (err: unknown) => {
              log(`${label}: refused tcpip-forward ${bindAddr}:${bindPort}: ${errorText(err)}`);
              reject?.();
            },
          );
          return;
        }
        if (name === 'cancel-tcpip-forward') {
          const { bindAddr, bindPort } = info;
          if (remote.remove(bindAddr, bindPort)) accept?.();
          else reject?.();
          return;
        }
        log(`${label}: refused global request ${name}`);
        reject?.();
      });
    });

    conn.on('error', (err: Error) => log(`${label}: ${errorText(err)}`));
    conn.on('close', () => {
      this.connections.delete(conn);
      log(`${label}: connection closed`);
    });
  }
}

function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
