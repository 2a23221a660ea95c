// The cove CLI as a user runs it (bin/cove, a child process): help for every command, unknown flags
// and commands refused with exit 2 and the flag named, and the commands that reach coved against a
// real coved (no VM) in a temporary $COVE_HOME.
import assert from 'node:assert/strict';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { COMMANDS } from '../../vmm-host/cli/commands';
import { sandboxRows, stateText } from '../../vmm-host/cli/commands/inspect';
import type { SandboxInfo } from '../../contract/protocol';

const REPO = path.resolve(__dirname, '..', '..', '..');
const COVE = path.join(REPO, 'bin', 'cove');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cove(home: string, args: string[]): Result {
  const r = child_process.spawnSync(process.execPath, [COVE, ...args], {
    env: { ...process.env, COVE_HOME: home, DOCKER_CONFIG: path.join(home, 'docker') },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('without coved', () => {
  let home = '';
  before(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-cli-'));
  });
  after(() => {
    fs.rmSync(home, { recursive: true, force: true });
  });

  test('cove help lists every command with its summary; no command is a usage error', () => {
    const r = cove(home, ['help']);
    assert.equal(r.code, 0);
    for (const c of COMMANDS.filter((x) => !x.hidden)) assert.match(r.stdout, new RegExp(`^  ${c.name} +${c.summary.slice(0, 20).replace(/[().?*+[\]]/g, '\\$&')}`, 'm'));
    assert.doesNotMatch(r.stdout, /ssh-proxy/, 'plumbing is not listed');
    const none = cove(home, []);
    assert.equal(none.code, 2);
    assert.equal(none.stdout, r.stdout);
  });

  test('every command prints its own help, with --help, -h and cove help CMD', () => {
    for (const c of COMMANDS) {
      for (const args of [[c.name, '--help'], [c.name, '-h'], ['help', c.name]]) {
        const r = cove(home, args);
        assert.equal(r.code, 0, `cove ${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stdout.startsWith(`Usage: cove ${c.name}`), `cove ${args.join(' ')} shows the usage of ${c.name}`);
        for (const flag of Object.keys(c.flags ?? {})) assert.match(r.stdout, new RegExp(`--${flag}\\b`), `cove ${c.name} --help names --${flag}`);
      }
    }
    assert.match(cove(home, ['up', '--help']).stdout, /--keep-awake/);
    assert.match(cove(home, ['list', '--help']).stdout, /^Usage: cove ls/, 'an alias shows its command');
  });

  test('an unknown flag is refused with exit 2, naming the flag', () => {
    for (const [args, flag] of [
      [['ls', '--frob'], '--frob'],
      [['stop', 'x', '--json'], '--json'],
      [['up', '.', '-x'], '-x'],
      [['exec', 't1', '--bogus', '--', 'ls'], '--bogus'],
      [['image', 'build', '--fast'], '--fast'],
    ] as Array<[string[], string]>) {
      const r = cove(home, args);
      assert.equal(r.code, 2, `cove ${args.join(' ')}`);
      assert.match(r.stderr, new RegExp(`^cove: unknown flag ${flag} for cove ${args[0]}: see \`cove ${args[0]} --help\`\\n$`));
    }
  });

  test('malformed flags, unknown commands and bad values are usage errors too', () => {
    const cases: Array<[string[], RegExp]> = [
      [['up', '.', '--cpus'], /the flag --cpus needs a value/],
      [['up', '.', '--cpus', '-1'], /--cpus/],
      [['ls', '--json=yes'], /the flag --json takes no value/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['help', 'frobnicate'], /unknown command "frobnicate"/],
      [['up', '.', '--mount-type', 'nfs'], /--mount-type must be virtiofs or 9p/],
      [['up', '.', '--mount', '9p'], /the way the folder is shared is now --mount-type 9p/],
      [['up', '.', '--mount', 'a:b:c'], /is not HOST\[:GUEST\]\[:ro\]/],
      [['up', '.', '--mount', '/x:rel'], /must be absolute/],
      [['up', '.', '--bind-guard', 'maybe'], /--bind-guard must be on or off/],
      [['up', '.', '--no-mounts', '--mount', '/x'], /--no-mounts and --mount cannot go together/],
      [['up', '.', '--memory', 'lots'], /cannot read the size "lots"/],
      [['publish', 't1', '-p', '80'], /use HOST:GUEST/],
      [['inspect'], /expected exactly one sandbox name, got 0/],
      [['sleep', 'Bad_Name'], /not allowed/],
    ];
    for (const [args, pattern] of cases) {
      const r = cove(home, args);
      assert.ok(r.code === 2 || (args[0] === 'sleep' && r.code === 1), `cove ${args.join(' ')} exited ${r.code}`);
      assert.match(r.stderr, pattern, `cove ${args.join(' ')}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    assert.equal(fs.existsSync(path.join(home, 'coved.pid')), false, 'no usage error started coved');
  });
});

describe('with a real coved (no VM)', () => {
  let home = '';
  before(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-cli-'));
  });
  after(() => {
    const pid = Number(fs.existsSync(path.join(home, 'coved.pid')) ? fs.readFileSync(path.join(home, 'coved.pid'), 'utf8') : 0);
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    fs.rmSync(home, { recursive: true, force: true });
  });

  test('ls starts coved and says there is nothing yet; --json is an empty list', () => {
    const r = cove(home, ['ls']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'no sandboxes yet: run `cove up` in a folder\n');
    assert.deepEqual(JSON.parse(cove(home, ['ls', '--json']).stdout), []);
  });

  test('sleep, inspect and stop of a missing sandbox exit 1 with the reason', () => {
    for (const cmd of ['sleep', 'inspect', 'stop', 'start']) {
      const r = cove(home, [cmd, 'ghost']);
      assert.equal(r.code, 1, `cove ${cmd} ghost: ${r.stderr}`);
      assert.match(r.stderr, /ghost/);
    }
  });

  test('up --keep-awake is accepted and reaches coved (which refuses the missing folder)', () => {
    const r = cove(home, ['up', path.join(home, 'no-such-folder'), '--keep-awake', '--name', 'k1']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /does not exist/);
  });
});

test('ls and inspect show paused and asleep for what they are', () => {
  const s = (state: SandboxInfo['state'], dockerReady = false) => ({ state, dockerReady }) as SandboxInfo;
  assert.equal(stateText(s('paused'), false), 'paused');
  assert.equal(stateText(s('asleep'), false), 'asleep');
  assert.match(stateText(s('paused'), true), /^paused \(in memory, no CPU; wakes on the next connection\)$/);
  assert.match(stateText(s('asleep'), true), /^asleep \(saved to disk/);
  assert.equal(stateText(s('running', true), true), 'running (docker ready)');
  assert.equal(stateText(s('stopped'), true), 'stopped');
});

test('inspect shows how the VM last came up, keep-awake and the warm-start note', () => {
  const info = {
    name: 'w1', state: 'asleep', workspace: '/w', mount: 'virtiofs', mounts: [], bindGuard: true, network: 'passt', readonly: false, allowHostPorts: [], cpus: 2, memoryMiB: 1024, diskGiB: 20,
    accel: 'tcg', context: 'cove-w1', dockerHost: 'unix:///x', dir: '/h/vms/w1', image: 'docker-abc', ports: [], dockerReady: false, bootSeconds: 1.5,
    bootKind: 'wake', keepAwake: true, warmNote: 'the image has no template yet', pids: { qemu: null, virtiofsd: null, passt: null }, createdAt: '',
  } as SandboxInfo;
  const rows = Object.fromEntries(sandboxRows(info));
  assert.match(rows.state, /^asleep/);
  assert.equal(rows.boot, '1.5 s (woken from sleep)');
  assert.equal(rows['keep awake'], 'yes');
  assert.equal(rows['warm start'], 'the image has no template yet');
  assert.equal(Object.fromEntries(sandboxRows({ ...info, bootKind: 'template' })).boot, "1.5 s (restored from the image's template)");
  assert.equal(Object.fromEntries(sandboxRows({ ...info, bootKind: null, bootSeconds: null })).boot, '-');
});
