// coved's end of the stdin port (agent/PROTOCOL.md, "The stdin port"): one virtio-serial port per
// VM whose guest end the agent hands to one user at a time: a `cove exec` command's stdin or stdout
// (exec-relay.ts), or the request bytes of one large Docker upload (docker-upload.ts). The lease
// keeps the two from asking for it at once; the guest refuses a second opener anyway (EBUSY), and
// then the bytes take the data channel as before.
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import { envSwitch } from './env-parse';

/** `COVE_UPLOAD_PORT=off` keeps Docker uploads on the data channel (to compare, or to rule the port out). */
export function uploadPortEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return envSwitch(env, 'COVE_UPLOAD_PORT', true);
}

/** Who holds the sandbox's stdin port on the host side. */
export class StdinPortLease {
  private held = false;

  /** Takes the port if it is free; true when taken. */
  take(): boolean {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  release(): void {
    this.held = false;
  }
}

/**
 * The guest's input on the stdin port: qemu's socket, the preamble (the nonce) written first. Half-open,
 * so that ending what is written does not close the socket under a guest still reading.
 */
export function stdinPortSink(sockPath: string, nonce: string, log: (msg: string) => void, what: string): net.Socket {
  const sock = net.connect({ path: sockPath, allowHalfOpen: true });
  sock.write(nonce, 'latin1');
  sock.resume(); // qemu sends nothing the host wants on this port.
  sock.on('error', (err) => log(`${what}: the stdin port: ${err.message}`));
  return sock;
}

/** Resolves when a stream or socket has closed (at once if it already has). */
export function closed(s: Duplex): Promise<void> {
  return new Promise((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));
}

/**
 * One connection to a guest service whose two directions take two paths: what is written goes to
 * `sink` (the stdin port), what is read comes from `source` (a data-channel stream). Never ends the
 * sink on its own: the guest reads the port until the host closes it, which `destroy` does.
 */
export class SplitChannel extends Duplex {
  constructor(
    private readonly sink: net.Socket,
    private readonly source: Duplex,
  ) {
    super({ allowHalfOpen: true });
    source.on('data', (d: Buffer) => {
      if (!this.push(d)) source.pause();
    });
    source.on('end', () => this.push(null));
    source.on('error', (err: Error) => this.destroy(err));
    source.on('close', () => {
      if (!source.readableEnded) this.destroy(new Error('the guest closed the connection'));
    });
    sink.on('error', (err: Error) => this.destroy(err));
    sink.on('close', () => {
      if (!this.destroyed && !this.writableFinished) this.destroy(new Error('the stdin port closed'));
    });
  }

  override _read(): void {
    this.source.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.sink.write(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    this.sink.write(Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    callback();
  }

  override _destroy(err: Error | null, callback: (err: Error | null) => void): void {
    this.sink.destroy();
    this.source.destroy();
    callback(err);
  }
}
