// What a guest root does to attack the host through `cove cp`: it takes over /run/cove/agent.sock
// (where coved relays the CLI's SSH connections) with its own SSH server, signed with the sandbox's
// own host key read from /run/cove/config.json, and serves the hostile tree of hostile-sftp.ts at
// /hostile/<scenario>. guest.test.ts bundles this file (with ssh2) into the shared folder and runs
// it as guest root from a --privileged --pid=host container with nsenter. On SIGTERM it puts the
// real agent's socket back.
import * as fs from 'node:fs';
import { SCENARIOS, hostileServer, type HostileNode } from './hostile-sftp';

const SOCK = '/run/cove/agent.sock';
const SAVED = '/run/cove/agent.sock.real';

function main(): void {
  const config = JSON.parse(fs.readFileSync('/run/cove/config.json', 'utf8')) as { hostKey: string };
  const root: HostileNode = { type: 'dir', entries: SCENARIOS };
  const log = { requests: [] as string[] };
  const server = hostileServer(config.hostKey, root, log, 'hostile');
  // The real agent keeps listening on its socket under another name; the path is ours now.
  fs.renameSync(SOCK, SAVED);
  server.listen(SOCK, () => process.stdout.write(`hostile agent listening on ${SOCK}\n`));
  const restore = () => {
    server.close();
    fs.rmSync(SOCK, { force: true });
    fs.renameSync(SAVED, SOCK);
    process.stdout.write(`real agent socket restored; requests: ${log.requests.length}\n`);
    process.exit(0);
  };
  process.on('SIGTERM', restore);
  process.on('SIGINT', restore);
}

main();
