// The integration tests' clean-up (test/helpers/harness.ts resetTestHome) ends every VM process a
// sandbox folder records, passt included (defect #10: passt processes leaked), and spares a pid
// that now belongs to an unrelated process.
import assert from 'node:assert/strict';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { waitFor } from '../../contract/wait';

const HARNESS = path.resolve(__dirname, '..', 'helpers', 'harness.js');

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A long-running process whose command line names `dir`, as qemu's, virtiofsd's and passt's do. */
function standIn(dir: string): child_process.ChildProcess {
  const c = child_process.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', dir], { stdio: 'ignore', detached: true });
  c.unref();
  return c;
}

test('resetTestHome ends qemu, virtiofsd and passt of every sandbox folder', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-reset-'));
  const home = path.join(root, 'home');
  const vmDir = path.join(home, 'vms', 'leaky');
  fs.mkdirSync(vmDir, { recursive: true });
  const procs = { 'qemu.pid': standIn(vmDir), 'virtiofsd.pid': standIn(vmDir), 'passt.pid': standIn(vmDir) };
  // A pid file whose process is not this VM's (a reused pid): it must survive.
  const bystander = standIn(path.join(root, 'elsewhere'));
  try {
    for (const [f, c] of Object.entries(procs)) fs.writeFileSync(path.join(vmDir, f), `${c.pid}\n`);
    fs.mkdirSync(path.join(home, 'vms', 'other'), { recursive: true });
    fs.writeFileSync(path.join(home, 'vms', 'other', 'passt.pid'), `${bystander.pid}\n`);
    const r = child_process.spawnSync(process.execPath, ['-e', `require(${JSON.stringify(HARNESS)}).resetTestHome()`], {
      env: { ...process.env, COVE_TEST_HOME: home },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 0, r.stderr);
    for (const [f, c] of Object.entries(procs)) await waitFor(`the process of ${f} to end`, 5000, () => !alive(c.pid!), 50);
    assert.ok(alive(bystander.pid!), 'a process that is not the VM\'s was killed');
    assert.equal(fs.existsSync(path.join(home, 'vms')), false);
  } finally {
    for (const c of [...Object.values(procs), bystander]) c.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  }
});
