// One SSH `session` channel: env, pty-req, window-change and signal requests, then one of exec,
// shell, subsystem sftp, subsystem cove-events or subsystem cove-control.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { PseudoTtyInfo, RejectConnection, ServerChannel, Session, SetEnvInfo, SignalInfo, WindowChangeInfo } from 'ssh2';
import { EVENTS_SUBSYSTEM, type AgentEvent } from '../contract/events';
import { CWD_ENV } from '../contract/guest';
import { CONTROL_SUBSYSTEM } from '../contract/control';
import { errorText, log } from './log';
import { findPtyChild, foregroundGroup, resizePts, spawnPty, type PtyRequest } from './pty';
import type { ConnectionContext } from './context';
import { serveSftp } from './sftp';

type Accept = (() => void) | undefined;
type AcceptChannel = () => ServerChannel;

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

let sessionCount = 0;

export interface UserInfo {
  name: string;
  home: string;
  shell: string;
}

export function currentUser(): UserInfo {
  try {
    const u = os.userInfo();
    return { name: u.username, home: u.homedir || '/', shell: u.shell && fs.existsSync(u.shell) ? u.shell : '/bin/sh' };
  } catch {
    return { name: 'root', home: '/root', shell: '/bin/sh' };
  }
}

export function handleSession(session: Session, ctx: ConnectionContext): void {
  const id = `${ctx.label}/s${++sessionCount}`;
  const clientEnv: Record<string, string> = {};
  let pty: PtyRequest | undefined;
  let size: { rows: number; cols: number } | undefined;
  let running: Running | undefined;

  session.on('env', (accept: Accept, _reject: RejectConnection, info: SetEnvInfo) => {
    clientEnv[info.key] = info.val;
    accept?.();
  });
  session.on('pty', (accept: Accept, _reject: RejectConnection, info: PseudoTtyInfo) => {
    pty = { term: info.term, cols: info.cols, rows: info.rows };
    size = { rows: info.rows, cols: info.cols };
    accept?.();
  });
  session.on('window-change', (accept: Accept, _reject: RejectConnection, info: WindowChangeInfo) => {
    size = { rows: info.rows, cols: info.cols };
    running?.resize(info.rows, info.cols);
    accept?.();
  });
  session.on('signal', (accept: Accept, _reject: RejectConnection, info: SignalInfo) => {
    running?.signal(info.name);
    accept?.();
  });
  session.on('exec', (accept: AcceptChannel, _reject: RejectConnection, info: { command: string }) => {
    log(`${id}: exec${pty ? ' with pty' : ''} (${info.command.length} bytes)`);
    running = run(accept(), info.command, clientEnv, pty, id, () => size);
  });
  session.on('shell', (accept: AcceptChannel, reject: RejectConnection) => {
    if (!pty) {
      // A shell without a pty is still a shell: it reads commands from stdin.
      log(`${id}: shell without pty`);
    } else {
      log(`${id}: shell with pty ${pty.cols}x${pty.rows} ${pty.term}`);
    }
    if (running) return reject();
    running = run(accept(), null, clientEnv, pty, id, () => size);
  });
  session.on('sftp', (accept: () => Parameters<typeof serveSftp>[0]) => {
    log(`${id}: sftp`);
    serveSftp(accept(), id, cwdFrom(clientEnv));
  });
  session.on('subsystem', (accept: AcceptChannel, reject: RejectConnection, info: { name: string }) => {
    if (info.name === CONTROL_SUBSYSTEM && ctx.control) {
      log(`${id}: ${CONTROL_SUBSYSTEM} opened`);
      ctx.control(accept(), id);
      return;
    }
    if (info.name !== EVENTS_SUBSYSTEM) {
      log(`${id}: refused subsystem ${JSON.stringify(info.name)}`);
      reject();
      return;
    }
    log(`${id}: ${EVENTS_SUBSYSTEM} opened`);
    serveEvents(accept(), ctx, id);
  });
}

export function cwdFrom(clientEnv: Record<string, string>): string {
  const asked = clientEnv[CWD_ENV];
  return asked && asked.startsWith('/') ? asked : currentUser().home;
}

export function buildEnv(clientEnv: Record<string, string>, user: UserInfo): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH || DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
    LANG: process.env.LANG || 'C.UTF-8',
  };
  for (const [key, value] of Object.entries(clientEnv)) {
    if (key !== CWD_ENV) env[key] = value;
  }
  return env;
}

interface Running {
  resize(rows: number, cols: number): void;
  signal(name: string): void;
  hangup(): void;
}

function run(
  channel: ServerChannel,
  command: string | null,
  clientEnv: Record<string, string>,
  pty: PtyRequest | undefined,
  id: string,
  currentSize: () => { rows: number; cols: number } | undefined,
): Running {
  const user = currentUser();
  const env = buildEnv(clientEnv, user);
  let cwd = cwdFrom(clientEnv);
  if (!fs.existsSync(cwd)) {
    channel.stderr.write(`cove-agent: working directory ${cwd} does not exist; using /\n`);
    cwd = '/';
  }
  let child: ChildProcessWithoutNullStreams;
  if (pty) {
    child = spawnPty(command, pty, env, cwd, user.shell);
  } else if (command !== null) {
    child = spawn('/bin/sh', ['-c', command], { cwd, env, stdio: 'pipe', detached: true });
  } else {
    child = spawn(user.shell, ['-l'], { cwd, env, stdio: 'pipe', detached: true });
  }

  let exited = false;
  let ptsPath: string | null = null;
  let ptyPid: number | null = null;
  const applied = { rows: pty?.rows ?? 0, cols: pty?.cols ?? 0 };

  const applySize = (): void => {
    const want = currentSize();
    if (!ptsPath || !want || (want.rows === applied.rows && want.cols === applied.cols)) return;
    applied.rows = want.rows;
    applied.cols = want.cols;
    void resizePts(ptsPath, want.rows, want.cols, id);
  };
  if (pty && child.pid) {
    void findPtyChild(child.pid).then((found) => {
      ptyPid = found?.pid ?? null;
      ptsPath = found?.pts ?? null;
      if (!found && !exited) log(`${id}: could not find the pty of the session; window changes are ignored`);
      applySize();
    });
  }

  child.stdout.pipe(channel, { end: false });
  child.stderr.pipe(channel.stderr, { end: false });
  channel.pipe(child.stdin);
  child.stdin.on('error', () => undefined); // EPIPE when the process exits before reading stdin.

  channel.on('close', () => hangup());

  child.on('error', (err) => {
    log(`${id}: cannot start: ${errorText(err)}`);
    channel.stderr.write(`cove-agent: ${errorText(err)}\n`);
  });
  child.on('close', (code, signal) => {
    exited = true;
    // Let the queued output reach the channel first, then exit-status and close.
    channel.write(Buffer.alloc(0), () => {
      if (signal) {
        channel.exit(signal.replace(/^SIG/, ''), false, '');
        log(`${id}: killed by ${signal}`);
      } else {
        // A command that could not start reports a negative errno; 127 is the shell's "not found".
        channel.exit(code !== null && code >= 0 ? code : 127);
        log(`${id}: exited ${code}`);
      }
      channel.end();
    });
  });

  function hangup(): void {
    // Like sshd when a connection goes: a pty session is hung up; a plain command loses its pipes
    // (it sees EOF on stdin and EPIPE or SIGPIPE when it writes) but is not signalled.
    if (exited) return;
    child.stdin.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
    if (!pty || !child.pid) return;
    try {
      process.kill(child.pid, 'SIGHUP');
    } catch {
      // Already gone.
    }
  }

  const groupOf = (): number | null => {
    if (!child.pid) return null;
    if (pty) return ptyPid ? (foregroundGroup(ptyPid) ?? ptyPid) : null;
    return child.pid; // Non-pty children lead their own process group (detached).
  };

  return {
    resize: () => applySize(),
    signal: (name: string) => {
      const group = groupOf();
      if (exited || !group) return;
      const sig = `SIG${name.replace(/^SIG/, '')}` as NodeJS.Signals;
      try {
        process.kill(-group, sig);
        log(`${id}: forwarded ${sig}`);
      } catch (err) {
        log(`${id}: cannot forward ${sig}: ${errorText(err)}`);
      }
    },
    hangup,
  };
}

function serveEvents(channel: ServerChannel, ctx: ConnectionContext, id: string): void {
  const send = (event: AgentEvent): void => {
    if (channel.writable) channel.write(`${JSON.stringify(event)}\n`);
  };
  send(ctx.hub.hello());
  const unsubscribe = ctx.hub.subscribe(send);
  const stop = (): void => {
    if (unsubscribe()) log(`${id}: ${EVENTS_SUBSYSTEM} closed`);
  };
  channel.on('close', stop);
  channel.on('end', () => {
    stop();
    channel.end();
  });
  channel.on('error', stop);
  channel.resume(); // Whatever the client sends is ignored.
}
