// coved's entry: one per user. Takes the pid-file lock, loads and re-attaches to every sandbox, and
// serves the API until SIGTERM/SIGINT or a `cove/shutdown` request. VMs keep running after it exits.
import * as fs from 'node:fs';
import { coveHome, homeFile, vmFile } from '../../contract/layout';
import { NAME_MAX, checkName } from '../../contract/names';
import { sshProxy } from '../../contract/ssh';
import { processAlive } from '../driver/proc';
import { Coved } from './coved';
import { exitOnUncaught, serve } from './server';
import { settingProblems } from './settings';
import { takeLockOrHolder, type Lock } from '../image/lock';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const VERSION = (require('../../../package.json') as { version: string }).version;

function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
}

/**
 * One coved per $COVE_HOME: the image lock's logic (vmm-host/image/lock.ts) on the pid file. A pid
 * file that is still empty belongs to a coved that has just created it, not to a dead one.
 */
async function takeLock(pidFile: string): Promise<Lock | null> {
  const got = await takeLockOrHolder(pidFile, { isAlive: (pid) => processAlive(pid, 'coved') || processAlive(pid, 'cove\0daemon') });
  if (typeof got !== 'number') return got;
  log(`coved is already running (pid ${got}) for ${pidFile}`);
  return null;
}

async function main(): Promise<void> {
  // Everything coved, qemu and virtiofsd create (sockets, disks, keys, logs) is the user's alone.
  process.umask(0o077);
  const home = coveHome();
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  fs.chmodSync(home, 0o700);
  // A setting coved cannot take stops it here, naming each, rather than being ignored or failing
  // each boot later. The CLI shows these lines when coved exits before it answers.
  const problems = settingProblems();
  if (problems.length > 0) {
    for (const p of problems) log(p.message);
    log(`coved cannot start: ${problems.length === 1 ? 'a setting' : `${problems.length} settings`} in its environment above; fix or unset ${problems.map((p) => p.key).join(', ')}`);
    process.exit(2);
  }
  const longest = vmFile('x'.repeat(NAME_MAX), 'dockerSock', home);
  if (Buffer.byteLength(longest) > 107) {
    log(`COVE_HOME ${home} is too long: socket paths under it would exceed the 107-byte unix socket limit; use a shorter COVE_HOME`);
    process.exit(2);
  }
  const pidFile = homeFile('covedPid', home);
  const lock = await takeLock(pidFile);
  if (!lock) process.exit(0);
  const coved = new Coved(home, log);
  let stopServer: (() => Promise<void>) | null = null;
  let stopping = false;
  const shutdown = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`coved stopping (${why}); sandboxes keep running`);
    await stopServer?.().catch(() => undefined);
    await coved.shutdown().catch(() => undefined);
    lock.release();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  // An uncaught exception leaves coved in a state nobody knows: log it and exit non-zero, so the
  // next client starts a fresh coved, which re-attaches to the VMs (they outlive coved by design).
  exitOnUncaught(log, () => {
    lock.release();
    fs.rmSync(homeFile('covedSock', home), { force: true });
  });
  process.on('unhandledRejection', (e) => log(`unhandled rejection: ${e instanceof Error ? e.stack : String(e)}`));
  log(`coved ${VERSION} starting (pid ${process.pid}, home ${home})`);
  await coved.init();
  stopServer = await serve(coved, homeFile('covedSock', home), VERSION, () => void shutdown('shutdown request'));
  log('coved ready');
}

if (process.argv[2] === 'ssh-proxy') {
  // `coved ssh-proxy NAME`: OpenSSH's ProxyCommand (ssh_config), from the same file coved runs.
  void sshProxy(checkName(process.argv[3]), coveHome()).then((code) => process.exit(code));
} else {
  main().catch((e: unknown) => {
    log(`coved failed: ${e instanceof Error ? e.stack : String(e)}`);
    process.exit(1);
  });
}
