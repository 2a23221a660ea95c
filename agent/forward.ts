// direct-streamlocal@openssh.com (to a guest unix socket: /var/run/docker.sock for every docker
// CLI connection of the host) and direct-tcpip (to a guest host:port). Each channel is bridged to
// one socket with half-close carried both ways, which Docker's hijacked streams (attach, exec,
// BuildKit sessions) depend on: the client's EOF shuts down the socket's write side and the
// response keeps flowing; the socket's EOF becomes the channel's EOF and the client may keep
// sending. The channel closes when both directions have ended.
import * as net from 'node:net';
import type { AcceptConnection, Connection, RejectConnection, ServerChannel } from 'ssh2';
import { errorText, log } from './log';
import type { ConnectionContext } from './context';

let channelCount = 0;

export function openStreamlocal(accept: AcceptConnection<ServerChannel>, reject: RejectConnection, socketPath: string, ctx: ConnectionContext): void {
  const what = `streamlocal ${socketPath}`;
  if (!socketPath || !socketPath.startsWith('/')) {
    log(`${ctx.label}: refused ${what}: not an absolute path`);
    reject();
    return;
  }
  connectThen(net.connect({ path: socketPath, allowHalfOpen: true }), accept, reject, what, ctx);
}

export function openTcpip(accept: AcceptConnection<ServerChannel>, reject: RejectConnection, host: string, port: number, ctx: ConnectionContext): void {
  connectThen(net.connect({ host, port, allowHalfOpen: true }), accept, reject, `tcpip ${host}:${port}`, ctx);
}

/** Opens the channel only once the socket is connected, so a failure is an SSH open failure. */
function connectThen(socket: net.Socket, accept: AcceptConnection<ServerChannel>, reject: RejectConnection, what: string, ctx: ConnectionContext): void {
  const id = ++channelCount;
  const onError = (err: Error): void => {
    log(`${ctx.label}: refused ${what} #${id}: ${errorText(err)}`);
    reject();
  };
  socket.once('error', onError);
  socket.once('connect', () => {
    socket.off('error', onError);
    const channel = accept();
    log(`${ctx.label}: opened ${what} #${id}`);
    bridge(channel, socket, () => log(`${ctx.label}: closed ${what} #${id}`));
  });
}

/** Pipes a channel and a socket both ways with half-close; `onClose` runs once at the end. */
export function bridge(channel: ServerChannel, socket: net.Socket, onClose: () => void): void {
  let channelEnded = false; // The client sent EOF.
  let socketEnded = false; // The socket sent EOF.
  let closed = false;
  const finish = (): void => {
    if (closed) return;
    closed = true;
    socket.destroy();
    channel.end(); // Sends CLOSE (after EOF, if not sent yet).
    onClose();
  };
  const maybeFinish = (): void => {
    if (channelEnded && socketEnded) finish();
  };

  channel.pipe(socket, { end: false });
  socket.pipe(channel, { end: false });

  channel.on('end', () => {
    channelEnded = true;
    socket.end(); // Half-close: the peer reads EOF, and may still answer.
    maybeFinish();
  });
  socket.on('end', () => {
    // Flush what is queued on the channel, then send EOF without CLOSE: the client may still send.
    channel.write(Buffer.alloc(0), () => {
      (channel as unknown as { eof(): void }).eof();
      socketEnded = true;
      maybeFinish();
    });
  });
  socket.on('error', () => finish());
  socket.on('close', () => {
    if (!socketEnded) finish();
  });
  channel.on('close', () => finish());
  channel.on('error', () => finish());
}

/**
 * Remote forwarding (`tcpip-forward`, RFC 4254 7.1) for the host's allow list: the agent listens
 * on a guest loopback port and hands each connection to the host as a `forwarded-tcpip` channel;
 * coved decides what, on the host, it reaches. Only loopback binds are accepted, so the guest's
 * own network never exposes a host service.
 */
export class RemoteForwards {
  private readonly servers = new Map<string, net.Server>();

  constructor(
    private readonly conn: Connection,
    private readonly ctx: ConnectionContext,
  ) {}

  async add(bindAddr: string, bindPort: number): Promise<number> {
    const addr = bindAddr === 'localhost' || bindAddr === '' ? '127.0.0.1' : bindAddr;
    if (addr !== '127.0.0.1' && addr !== '::1') throw new Error(`only loopback binds are allowed, not ${bindAddr}`);
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      const id = ++channelCount;
      const what = `forwarded-tcpip ${addr}:${port} #${id}`;
      this.conn.forwardOut(addr, port, socket.remoteAddress ?? '127.0.0.1', socket.remotePort ?? 0, (err, channel) => {
        if (err) {
          log(`${this.ctx.label}: ${what} refused by the host: ${errorText(err)}`);
          socket.destroy();
          return;
        }
        log(`${this.ctx.label}: opened ${what}`);
        bridge(channel, socket, () => log(`${this.ctx.label}: closed ${what}`));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: addr, port: bindPort }, () => resolve());
    });
    const port = (server.address() as net.AddressInfo).port;
    this.servers.set(`${addr}:${port}`, server);
    log(`${this.ctx.label}: listening on guest ${addr}:${port} for the host`);
    return port;
  }

  remove(bindAddr: string, bindPort: number): boolean {
    const addr = bindAddr === 'localhost' || bindAddr === '' ? '127.0.0.1' : bindAddr;
    const key = `${addr}:${bindPort}`;
    const server = this.servers.get(key);
    if (!server) return false;
    server.close();
    this.servers.delete(key);
    return true;
  }

  closeAll(): void {
    for (const s of this.servers.values()) s.close();
    this.servers.clear();
  }
}
