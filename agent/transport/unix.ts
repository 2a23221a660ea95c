// The agent's unix socket (GUEST.agentSock): coved relays OpenSSH clients to it over a
// streamlocal channel. Mode 0600: only root in the guest reaches it.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { ServeConnection, Transport } from './transport';

export class UnixTransport implements Transport {
  readonly name: string;
  private server: net.Server | undefined;
  private count = 0;

  constructor(private readonly socketPath: string) {
    this.name = `unix:${socketPath}`;
  }

  async start(serve: ServeConnection): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true, mode: 0o755 });
    try {
      fs.unlinkSync(this.socketPath); // A socket left by the previous agent process.
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const server = net.createServer((socket) => serve(socket, `unix#${++this.count}`));
    this.server = server;
    // The umask makes the socket 0600 from its creation, with no window where it is wider.
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    fs.chmodSync(this.socketPath, 0o600);
  }

  close(): void {
    this.server?.close();
  }
}
