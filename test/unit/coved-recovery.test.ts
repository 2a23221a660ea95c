// Issue 11, defect 4: coved serves clients at once and recovers its sandboxes in the background.
// A home with several stopped sandboxes and a docker CLI that takes seconds per call (recovery
// re-creates each sandbox's context with it) must not keep `cove/version` or `sandbox/list` waiting.
// No VM: the sandboxes are stopped ones, as coved finds them on disk.
import { strict as assert } from 'node:assert';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { connect } from '../../contract/client';
import { Requests } from '../../contract/protocol';

const COVED = path.resolve(__dirname, '..', '..', 'vmm-host', 'coved', 'main.js');
const SLOW_DOCKER_S = 4;
const SANDBOXES = 3;

let coved: child_process.ChildProcess | null = null;
const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-rec-'));

after(() => {
  coved?.kill('SIGKILL');
  fs.rmSync(home, { recursive: true, force: true });
});

test('coved answers while it recovers sandboxes with a slow docker CLI', { timeout: 120_000 }, async () => {
  const bin = path.join(home, 'bin');
  fs.mkdirSync(bin);
  // A docker CLI that answers every call after SLOW_DOCKER_S seconds (context inspect/create).
  fs.writeFileSync(path.join(bin, 'docker'), `#!/bin/sh\nsleep ${SLOW_DOCKER_S}\nexit 0\n`, { mode: 0o755 });
  for (let i = 0; i < SANDBOXES; i++) {
    const dir = path.join(home, 'vms', `s${i}`);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const config = { version: 1, name: `s${i}`, workspace: home, mount: '9p', readonly: false, cpus: 1, memoryMiB: 512, diskGiB: 4, image: 'docker-none', createdAt: new Date().toISOString(), published: [] };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ state: 'stopped', accel: null, mount: null, pids: { qemu: null, virtiofsd: null }, startedAt: null, bootSeconds: null }));
  }
  const env = { ...process.env, COVE_HOME: home, PATH: `${bin}:${process.env.PATH ?? ''}` };
  const t0 = Date.now();
  coved = child_process.spawn(process.execPath, [COVED], { env, stdio: 'ignore' });
  const sock = path.join(home, 'coved.sock');
  while (!fs.existsSync(sock)) {
    if (Date.now() - t0 > 30_000) throw new Error('coved did not create its socket within 30 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  const conn = await connect({ home, autoStart: false });
  const version = await conn.sendRequest(Requests.version);
  const list = await conn.sendRequest(Requests.list);
  const answeredMs = Date.now() - t0;
  conn.dispose();
  assert.equal(version.home, home);
  assert.deepEqual(list.map((s) => s.state), ['stopped', 'stopped', 'stopped']);
  // One docker call alone takes SLOW_DOCKER_S; recovering first would take SANDBOXES times that.
  assert.ok(answeredMs < SLOW_DOCKER_S * 1000, `coved answered ${answeredMs} ms after it started, before recovery could have finished`);
});
