// Forwarded ports over the forwarding NIC (docs/data-path.md): for a guest port that listens on
// every IPv4 address, coved's listener on the user's host port connects to a slirp `hostfwd` on a
// private host port instead of opening a stream through the agent, so the guest's kernel (and, for
// a published container port, Docker's own DNAT) carries the bytes and no guest process copies
// them. One hostfwd per guest port, made on the first connection and removed with the forward; they
// live in qemu, so a new qemu (a restart, a wake) starts with none.
import * as net from 'node:net';

/** What this needs from the driver: the VM's hostfwd, by host port. */
export interface HostForwarder {
  forwardPort(hostPort: number, guestPort: number): Promise<void>;
  unforwardPort(hostPort: number): Promise<void>;
}

/** A free port on host 127.0.0.1 right now (the kernel's pick; another process may take it before slirp binds it). */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export class NicForwards {
  /** guest port → the host port of its hostfwd (a promise while it is being made). */
  private readonly made = new Map<number, Promise<number>>();
  /** The qemu the hostfwds above belong to. */
  private vm: number | null = null;

  constructor(
    private readonly forwarder: HostForwarder,
    private readonly log: (msg: string) => void,
    private readonly connectTimeoutMs = 10_000,
  ) {}

  /** A TCP connection to the guest's `guestPort` through the forwarding NIC of the VM run by qemu `vm`. */
  async connect(vm: number, guestPort: number): Promise<net.Socket> {
    if (this.vm !== vm) {
      this.made.clear();
      this.vm = vm;
    }
    let hostPort = this.made.get(guestPort);
    if (!hostPort) {
      hostPort = this.make(guestPort);
      this.made.set(guestPort, hostPort);
      hostPort.catch(() => {
        if (this.made.get(guestPort) === hostPort) this.made.delete(guestPort);
      });
    }
    const port = await hostPort;
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`no answer from qemu's forward 127.0.0.1:${port} within ${this.connectTimeoutMs / 1000} s`));
      }, this.connectTimeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(sock);
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** Removes the hostfwd of `guestPort`, if there is one (connections through it stay). */
  release(guestPort: number): void {
    const made = this.made.get(guestPort);
    if (!made) return;
    this.made.delete(guestPort);
    made.then(
      (hostPort) => this.forwarder.unforwardPort(hostPort).catch((e: unknown) => this.log(`forwarding NIC: cannot remove 127.0.0.1:${hostPort}: ${e instanceof Error ? e.message : String(e)}`)),
      () => undefined,
    );
  }

  private async make(guestPort: number): Promise<number> {
    let lastError: unknown = null;
    // A port another process takes between the pick and slirp's bind is retried with another.
    for (let attempt = 0; attempt < 3; attempt++) {
      const hostPort = await freeLoopbackPort();
      try {
        await this.forwarder.forwardPort(hostPort, guestPort);
        this.log(`forwarding NIC: 127.0.0.1:${hostPort} -> guest port ${guestPort}`);
        return hostPort;
      } catch (e) {
        lastError = e;
      }
    }
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  }
}
