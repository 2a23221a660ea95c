// The driver's host process checks: a VM's helpers are found by their command line, so a stop
// catches one that coved started just before it was killed (no pid file names it).
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { processAlive, vmProcessesIn } from '../../vmm-host/driver/proc';

/** A long-running process whose argv[0] is `program` and whose command line names `file`. */
function fakeProgram(program: string, file: string): ChildProcess {
  // tail -F keeps retrying a file that does not exist; argv0 is what /proc/<pid>/cmdline shows first.
  return spawn('tail', ['-F', file], { argv0: program, stdio: 'ignore' });
}

test('vmProcessesIn finds a VM program naming a file in the folder, and nothing else', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-proc-'));
  const dir = path.join(root, 'vms', 'wd');
  const children: ChildProcess[] = [];
  try {
    const stray = fakeProgram('/usr/bin/passt', `${dir}/net.sock`);
    const neighbour = fakeProgram('/usr/bin/passt', `${dir}2/net.sock`);
    const other = fakeProgram('ssh', `${dir}/ssh_config`);
    children.push(stray, neighbour, other);
    const deadline = Date.now() + 10_000;
    while (vmProcessesIn(dir).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(vmProcessesIn(dir), [stray.pid], 'only the passt naming a file in this folder');
    assert.deepEqual(vmProcessesIn(`${dir}/`), [stray.pid], 'a trailing slash changes nothing');
    assert.ok(processAlive(neighbour.pid) && processAlive(other.pid));
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  }
});
