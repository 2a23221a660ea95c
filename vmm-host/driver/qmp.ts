// A minimal QMP client: one connection per command, every step under a deadline.
import * as net from 'node:net';
import { DeadlineError, DriverError } from './errors';

export async function qmpCommand(sock: string, command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(sock);
    let buf = '';
    let stage: 'greeting' | 'capabilities' | 'command' = 'greeting';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new DeadlineError(`QMP ${command} on ${sock}`, timeoutMs, 'qemu may be hung; stop it with SIGKILL'));
    }, timeoutMs);
    const finish = (err: Error | null, value?: unknown) => {
      clearTimeout(timer);
      conn.destroy();
      if (err) reject(err);
      else resolve(value);
    };
    conn.on('error', (e) => finish(new DriverError(`cannot talk QMP on ${sock}: ${e.message}`, 'is qemu running?', { cause: e })));
    conn.on('close', () => {
      // `quit` closes the socket instead of answering, sometimes: that is success.
      if (stage === 'command' && command === 'quit') finish(null, {});
      else finish(new DriverError(`qemu closed QMP on ${sock} during ${stage}`, 'see qemu.log'));
    });
    conn.on('data', (d) => {
      buf += d.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let msg: { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          continue;
        }
        if (msg.event) continue;
        if (stage === 'greeting' && msg.QMP) {
          stage = 'capabilities';
          conn.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
        } else if (stage === 'capabilities' && 'return' in msg) {
          stage = 'command';
          conn.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
        } else if (msg.error) {
          finish(new DriverError(`QMP ${command} failed: ${msg.error.desc ?? 'unknown error'}`, 'see qemu.log'));
        } else if (stage === 'command' && 'return' in msg) {
          finish(null, msg.return);
        }
      }
    });
  });
}

export async function qmpQuit(sock: string, timeoutMs = 5000): Promise<void> {
  await qmpCommand(sock, 'quit', undefined, timeoutMs);
}

export async function qmpQueryStatus(sock: string, timeoutMs = 5000): Promise<{ status: string; running: boolean }> {
  return (await qmpCommand(sock, 'query-status', undefined, timeoutMs)) as { status: string; running: boolean };
}
