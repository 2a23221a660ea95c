// A terminal whose shell runs in the guest: an SSH shell channel (PTY) to the agent through the
// sandbox's ssh.sock, started in the workspace path (the agent honours COVE_CWD), resized with the
// panel. When the shell exits, its status is shown and the terminal stays until a key is pressed.
import * as vscode from 'vscode';
import type { Client, ClientChannel } from 'ssh2';
import { messageOf } from '../../../contract/errors';
import { CWD_ENV } from '../../../contract/guest';
import { connectSandbox } from '../../../contract/ssh';

/** How much of a terminal's output is kept for `output()` (the tests read it back). */
const KEEP_CHARS = 256 * 1024;

export class SandboxPty implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number | undefined>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private client: Client | undefined;
  private channel: ClientChannel | undefined;
  private dims: vscode.TerminalDimensions | undefined;
  private exited = false;
  private kept = '';
  private exitResolve!: (code: number | null) => void;
  /** Resolves with the shell's exit status (null when it ended by a signal or a lost connection). */
  readonly exit = new Promise<number | null>((r) => (this.exitResolve = r));

  constructor(
    readonly sandbox: string,
    private readonly home: string,
    private readonly cwd: string,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** Everything written to the terminal so far (the last 256 KiB), escape sequences included. */
  output(): string {
    return this.kept;
  }

  open(initial: vscode.TerminalDimensions | undefined): void {
    this.dims = initial;
    this.write(`\x1b[2mConnecting to sandbox ${this.sandbox}…\x1b[0m\r\n`);
    void this.start();
  }

  private async start(): Promise<void> {
    try {
      const client = await connectSandbox(this.sandbox, this.home);
      this.client = client;
      client.on('error', (e) => this.log.warn(`terminal of ${this.sandbox}: ${e.message}`));
      client.on('close', () => this.finish(null, 'the connection to the sandbox closed'));
      const rows = this.dims?.rows ?? 24;
      const cols = this.dims?.columns ?? 80;
      const ch = await new Promise<ClientChannel>((resolve, reject) =>
        client.shell({ term: 'xterm-256color', rows, cols }, { env: { [CWD_ENV]: this.cwd } }, (err, c) => (err ? reject(err) : resolve(c))),
      );
      this.channel = ch;
      if (this.dims && (this.dims.rows !== rows || this.dims.columns !== cols)) ch.setWindow(this.dims.rows, this.dims.columns, 0, 0);
      let code: number | null = null;
      let signal: string | undefined;
      ch.on('exit', (c: number | null, s?: string) => {
        code = c;
        signal = s;
      });
      ch.on('data', (d: Buffer) => this.write(d.toString('utf8')));
      ch.stderr.on('data', (d: Buffer) => this.write(d.toString('utf8')));
      ch.on('close', () => this.finish(code, signal ? `killed by SIG${signal}` : undefined));
    } catch (e) {
      this.write(`\r\n\x1b[31mCannot open a shell in sandbox ${this.sandbox}: ${messageOf(e)}\x1b[0m\r\n`);
      this.finish(null, 'no shell');
    }
  }

  private finish(code: number | null, why: string | undefined): void {
    if (this.exited) return;
    this.exited = true;
    const status = code !== null ? `exit code ${code}` : (why ?? 'ended');
    this.write(`\r\n\x1b[2m[shell in sandbox ${this.sandbox} exited: ${status}] Press any key to close the terminal.\x1b[0m\r\n`);
    this.exitResolve(code);
    this.client?.end();
  }

  private write(text: string): void {
    this.kept = (this.kept + text).slice(-KEEP_CHARS);
    this.writeEmitter.fire(text);
  }

  handleInput(data: string): void {
    if (this.exited) {
      this.closeEmitter.fire(undefined);
      return;
    }
    this.channel?.write(data);
  }

  setDimensions(dims: vscode.TerminalDimensions): void {
    this.dims = dims;
    this.channel?.setWindow(dims.rows, dims.columns, 0, 0);
  }

  close(): void {
    this.exited = true;
    this.channel?.close();
    this.client?.end();
    this.exitResolve(null);
  }
}
