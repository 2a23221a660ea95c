// The `cove-control` subsystem of the real agent bundle, over SSH: rebirth (reseed, clock, config
// disk, key swap, hostname, mounts, in that order), suspend and resume, and bad requests. The
// agent runs on this host with its guest paths pointed into a temporary folder and its system
// commands (perl, mount, umount, hostname, sync) pointed at stub scripts that record their calls,
// so nothing on the host changes. The key swap is checked for real: new connections must see the
// new host key and get in only with the new client key. The perl helper itself runs for real at
// the end, against the host's /dev/urandom (root only) and with clock_settime faked by strace.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Client, ClientChannel } from 'ssh2';
import { agentEventProblems } from '../../contract/events-check';
import { EVENTS_SUBSYSTEM } from '../../contract/events';
import { encodeConfigDisk, type GuestConfig, type GuestMount } from '../../contract/config-disk';
import { CONTROL_MAX_REQUEST_BYTES, CONTROL_SUBSYSTEM, type ControlAnswer, type RebirthAnswer, type ResumeAnswer, type SuspendAnswer } from '../../contract/control';
import { requestLine, SYSCALL_HELPER, SyscallHelper, syscallNumbers, SystemError } from '../../agent/system';
import { parseRequest, RequestError } from '../../agent/control';
import { collect, connect, exec, LineReader, makeKeys, openAgentPort, publicBlob, startAgent, waitFor, within, type Keys, type RunningAgent } from './agent-harness';

/** A folder with stub system commands that append one line per call to `calls`. */
function makeFixture(): { dir: string; bin: string; calls: string; run: string; etc: string; disk: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-ctl-'));
  const bin = path.join(dir, 'bin');
  const run = path.join(dir, 'run');
  const etc = path.join(dir, 'etc');
  for (const d of [bin, run, etc]) fs.mkdirSync(d);
  const calls = path.join(dir, 'calls');
  const disk = path.join(dir, 'cfg.raw');
  fs.writeFileSync(path.join(run, 'config-device'), `${disk}\n`);
  const stub = (name: string, body: string): void => {
    fs.writeFileSync(path.join(bin, name), `#!/bin/sh\nPATH=/usr/bin:/bin\n${body}\n`, { mode: 0o755 });
  };
  // perl: checks that the helper compiles, then answers request lines as the helper does, keeping
  // the entropy and recording each request (without the entropy) as one call.
  stub(
    'perl',
    `[ "$1" = -e ] && { script="$2"; shift 2; }
[ "$1" = -- ] && shift
case "$1:$2" in *[!0-9:]*|:*|*:) echo "expected the clock syscall numbers first, got $1 $2" >&2; exit 4 ;; esac
/usr/bin/perl -c -e "$script" 2>/dev/null || { echo "the helper does not compile" >&2; exit 3; }
while IFS= read -r line; do
  set -- $line
  call=perl
  while [ $# -gt 0 ]; do
    case "$1" in
      reseed)
        call="$call reseed $2"
        printf %s "$3" > '${dir}/entropy.hex'
        if [ -e '${dir}/fail-reseed' ]; then echo "$call" >> '${calls}'; call=; echo "fail reseed RNDRESEEDCRNG on $2: Operation not permitted"; break; fi
        echo "reseed 1000000"; shift 3 ;;
      clock) call="$call clock $2 $3"; echo "clock 2000000"; shift 3 ;;
      flush) call="$call flush $2"; echo "flush 1000000"; shift 2 ;;
      *) echo "fail $1 unknown op $1"; break ;;
    esac
  done
  [ -n "$call" ] && echo "$call" >> '${calls}'
  echo end
done`,
  );
  // mount -t TYPE -o OPTIONS TAG PATH: the tag "badtag" does not exist; "no-vfs" is 9p only.
  stub(
    'mount',
    `echo "mount $*" >> '${calls}'
case "$5" in badtag) echo "mount: $6: special device $5 does not exist." >&2; exit 32 ;; esac
[ "$2" = virtiofs ] && [ "$5" = no-vfs ] && { echo "mount: $6: unknown filesystem type 'virtiofs'." >&2; exit 32; }
exit 0`,
  );
  // umount PATH: busy while PATH/.busy exists.
  stub(
    'umount',
    `echo "umount $*" >> '${calls}'
[ -e "$1/.busy" ] && { echo "umount: $1: target is busy." >&2; exit 32; }
exit 0`,
  );
  stub('sync', `echo "sync" >> '${calls}'`);
  return { dir, bin, calls, run, etc, disk };
}

function guestConfig(keys: Keys, hostname: string, mounts: GuestMount[]): GuestConfig {
  return {
    version: 1,
    name: hostname,
    hostname,
    hostKey: keys.hostPrivate,
    authorizedKeys: [keys.clientPublic],
    mounts,
    network: { address: '10.0.2.15/24', gateway: '10.0.2.2', dns: '10.0.2.3' },
    resizeRoot: true,
    insecureRegistries: [],
  };
}

/** Opens a control channel, writes `request` (a line as it is, or an object as JSON), reads the answer. */
async function control(client: Client, request: string | object): Promise<{ answer: ControlAnswer; code: number | null; raw: string }> {
  const stream = await within(
    new Promise<ClientChannel>((resolve, reject) => client.subsys(CONTROL_SUBSYSTEM, (err, s) => (err ? reject(err) : resolve(s)))),
    10_000,
    `opening ${CONTROL_SUBSYSTEM}`,
  );
  const r = await within(collect(stream, typeof request === 'string' ? request : `${JSON.stringify(request)}\n`), 20_000, 'the control answer');
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `exactly one answer line, got ${JSON.stringify(r.stdout)}`);
  return { answer: JSON.parse(lines[0]) as ControlAnswer, code: r.code, raw: lines[0] };
}

const entropy = (): string => crypto.randomBytes(64).toString('base64');
const calls = (file: string): string[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);

describe('agent control channel', () => {
  let agent: RunningAgent;
  let fx: ReturnType<typeof makeFixture>;
  let template: Client;
  const clone = makeKeys();
  let cloneClient: Client | undefined;

  before(async () => {
    fx = makeFixture();
    agent = await startAgent({
      env: {
        COVE_AGENT_RUN_DIR: fx.run,
        COVE_AGENT_URANDOM: path.join(fx.dir, 'urandom'),
        COVE_AGENT_ETC: fx.etc,
        COVE_AGENT_SYSTEM_PATH: fx.bin,
      },
    });
    template = await connect(agent, { expectHostKey: agent.keys.hostPrivate });
  });
  after(async () => {
    template?.end();
    cloneClient?.end();
    await agent?.stop();
    if (fx) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  test('bad requests get a clear error and exit status 1, and the agent carries on', async () => {
    const cases: [string | object, RegExp][] = [
      ['not json\n', /not a JSON line/],
      ['[1,2]\n', /JSON object/],
      [{ op: 'reboot' }, /unknown op "reboot"; the ops are rebirth, suspend and resume/],
      [{ op: 'rebirth', epochMs: Date.now(), entropy: 'c2hvcnQ=' }, /64 random bytes/],
      [{ op: 'rebirth', entropy: entropy() }, /epochMs/],
      [{ op: 'rebirth', epochMs: 5, entropy: entropy() }, /epochMs/],
      [{ op: 'suspend' }, /"unmount": true or false/],
      [{ op: 'resume', epochMs: Date.now(), entropy: entropy() }, /"remount"/],
      ['{"op":"suspend","pad":"' + 'x'.repeat(CONTROL_MAX_REQUEST_BYTES) + '"}\n', /longer than 65536 bytes/],
      ['', /without a request line/],
    ];
    for (const [request, expected] of cases) {
      const { answer, code } = await control(template, request);
      assert.equal(answer.ok, false, `refused: ${(typeof request === 'string' ? request : JSON.stringify(request)).slice(0, 60)}`);
      assert.equal(code, 1);
      if (!answer.ok) {
        assert.match(answer.error, expected);
        assert.equal(answer.step, 'request');
      }
    }
    assert.deepEqual(calls(fx.calls), [], 'no bad request ran anything');
    assert.equal((await exec(template, 'echo alive')).stdout, 'alive\n');
  });

  test('parseRequest accepts a request without a trailing newline and ignores extra fields', () => {
    const e = entropy();
    assert.deepEqual(parseRequest(JSON.stringify({ op: 'resume', epochMs: 1_800_000_000_000, entropy: e, remount: false, extra: 1 })), {
      op: 'resume',
      epochMs: 1_800_000_000_000,
      entropy: e,
      remount: false,
    });
    assert.throws(() => parseRequest('{"op":"rebirth","epochMs":1800000000000,"entropy":"' + '!'.repeat(88) + '"}'), RequestError);
  });

  test('rebirth reseeds, steps the clock, re-reads the config disk, swaps keys, sets the hostname and mounts, in that order', async (t) => {
    const ws = path.join(fx.dir, 'ws', 'project');
    const cache = path.join(fx.dir, 'cache');
    fs.writeFileSync(
      fx.disk,
      encodeConfigDisk(
        {
          ...guestConfig(clone, 'clone-1', [
            { tag: 'cove-ws', type: '9p', path: ws, readonly: false },
            { tag: 'no-vfs', type: 'virtiofs', path: cache, readonly: true },
          ]),
          aslr: false,
        },
      ),
    );
    const aslrSysctl = path.join(agent.dir, 'randomize_va_space');
    assert.equal(fs.readFileSync(aslrSysctl, 'utf8'), '2\n', 'the stand-in starts as the kernel default');
    const e = crypto.randomBytes(64);
    const epochMs = Date.now() + 3_600_000;
    const { answer, code } = await control(template, { op: 'rebirth', epochMs, entropy: e.toString('base64') });
    assert.equal(code, 0, JSON.stringify(answer));
    assert.ok(answer.ok, JSON.stringify(answer));
    const a = answer as RebirthAnswer;
    assert.equal(a.hostname, 'clone-1');
    assert.deepEqual(a.mounted, [ws, cache]);
    for (const step of ['reseed', 'clock', 'config', 'keys', 'hostname', 'mounts'] as const) assert.equal(typeof a.ms[step], 'number', step);
    t.diagnostic(`rebirth ms on this host (perl and mount are stubs): ${JSON.stringify(a.ms)}`);

    // The reseed got exactly the host's bytes; the clock target is the host's time, in ns.
    assert.deepEqual(Buffer.from(fs.readFileSync(path.join(fx.dir, 'entropy.hex'), 'utf8'), 'hex'), e);
    const log = calls(fx.calls);
    const perl = log[0].split(' ');
    assert.deepEqual(perl.slice(0, 4), ['perl', 'reseed', path.join(fx.dir, 'urandom'), 'clock']);
    assert.equal(perl[4], `${BigInt(epochMs) * 1_000_000n}`);
    assert.deepEqual(perl.slice(6), ['flush', fx.disk]);
    assert.deepEqual(log.slice(1), [
      `mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=512000,cache=none cove-ws ${ws}`,
      `mount -t virtiofs -o ro no-vfs ${cache}`,
      `mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=none no-vfs ${cache}`,
    ]);
    assert.ok(fs.statSync(ws).isDirectory(), 'the mount point was made');
    assert.equal(fs.readFileSync(aslrSysctl, 'utf8'), '0\n', "the clone's config turned address randomization off");

    // The config the init would have copied, root-only; the init's hostname files; the mounts list.
    const configFile = path.join(agent.dir, 'config.json');
    assert.equal((JSON.parse(fs.readFileSync(configFile, 'utf8')) as GuestConfig).hostname, 'clone-1');
    assert.equal(fs.statSync(configFile).mode & 0o777, 0o600);
    assert.equal(fs.readFileSync(path.join(agent.dir, 'hostname-sysctl'), 'utf8'), 'clone-1\n', "the kernel's hostname (a stand-in)");
    assert.equal(fs.readFileSync(path.join(fx.etc, 'hostname'), 'utf8'), 'clone-1\n');
    assert.match(fs.readFileSync(path.join(fx.etc, 'hosts'), 'utf8'), /^127\.0\.1\.1\tclone-1$/m);
    assert.equal(fs.readFileSync(path.join(fx.run, 'mounts'), 'utf8'), `${ws}\n${cache}\n`);
    assert.ok(!fs.existsSync(path.join(fx.run, 'mount-failed')));
  });

  test('after rebirth, new connections see the new host key and get in with the new client key only', async () => {
    // The template's client key is refused now.
    await assert.rejects(connect(agent, { privateKey: agent.keys.clientPrivate }), /authentication/i);
    // A client that pins the template's host key refuses the agent.
    await assert.rejects(connect(agent, { privateKey: clone.clientPrivate, expectHostKey: agent.keys.hostPrivate }), /verification|host key/i);
    // The clone's keys work, and the host key presented is the clone's.
    let seen: Buffer | undefined;
    cloneClient = await connect(agent, { privateKey: clone.clientPrivate, expectHostKey: clone.hostPrivate, onHostKey: (k) => (seen = k) });
    assert.ok(seen?.equals(publicBlob(clone.hostPrivate)));
    assert.ok(!seen?.equals(publicBlob(agent.keys.hostPrivate)));
    assert.equal((await exec(cloneClient, 'echo clone')).stdout, 'clone\n');
    // The connection that asked for the rebirth goes on.
    assert.equal((await exec(template, 'echo template')).stdout, 'template\n');
  });

  test('suspend with a busy share unmounts nothing and names it', async () => {
    const [ws, cache] = fs.readFileSync(path.join(fx.run, 'mounts'), 'utf8').trim().split('\n');
    fs.writeFileSync(path.join(ws, '.busy'), '');
    fs.rmSync(fx.calls);
    const { answer, code } = await control(cloneClient!, { op: 'suspend', unmount: true });
    assert.equal(code, 1);
    assert.ok(!answer.ok);
    if (!answer.ok) {
      assert.deepEqual(answer.busy, [ws]);
      assert.match(answer.error, /busy/);
    }
    // Reverse order: cache went first and came back; ws was busy.
    assert.deepEqual(calls(fx.calls), [
      'sync',
      `umount ${cache}`,
      `umount ${ws}`,
      `mount -t virtiofs -o ro no-vfs ${cache}`,
      `mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=none no-vfs ${cache}`,
    ]);
    assert.equal(fs.readFileSync(path.join(fx.run, 'mounts'), 'utf8'), `${ws}\n${cache}\n`);
    fs.rmSync(path.join(ws, '.busy'));
  });

  test('suspend unmounts in reverse order and syncs; resume reseeds, steps the clock and mounts again', async () => {
    const [ws, cache] = fs.readFileSync(path.join(fx.run, 'mounts'), 'utf8').trim().split('\n');
    fs.rmSync(fx.calls);
    const s = await control(cloneClient!, { op: 'suspend', unmount: true });
    assert.equal(s.code, 0, s.raw);
    assert.deepEqual((s.answer as SuspendAnswer).unmounted, [cache, ws]);
    assert.deepEqual(calls(fx.calls), ['sync', `umount ${cache}`, `umount ${ws}`, 'sync']);
    assert.equal(fs.readFileSync(path.join(fx.run, 'mounts'), 'utf8'), '');

    fs.rmSync(fx.calls);
    const e = crypto.randomBytes(64);
    const r = await control(cloneClient!, { op: 'resume', epochMs: Date.now(), entropy: e.toString('base64'), remount: true });
    assert.equal(r.code, 0, r.raw);
    const a = r.answer as ResumeAnswer;
    assert.deepEqual(a.mounted, [ws, cache]);
    assert.equal(a.hostname, 'clone-1');
    assert.deepEqual(Buffer.from(fs.readFileSync(path.join(fx.dir, 'entropy.hex'), 'utf8'), 'hex'), e);
    const log = calls(fx.calls);
    assert.match(log[0], /^perl reseed \S+ clock \d+ \d+$/, 'resume does not touch the config disk');
    assert.equal(log.filter((l) => l.startsWith('mount ')).length, 3);

    // Mounted shares stay as they are: resume without anything unmounted mounts nothing.
    const again = await control(cloneClient!, { op: 'resume', epochMs: Date.now(), entropy: entropy(), remount: true });
    assert.deepEqual((again.answer as ResumeAnswer).mounted, []);
    const quiet = await control(cloneClient!, { op: 'suspend', unmount: false });
    assert.deepEqual(quiet.answer, { ok: true, unmounted: [] });
  });

  test('a failed reseed stops before anything else changes', async () => {
    fs.writeFileSync(path.join(fx.dir, 'fail-reseed'), '');
    fs.rmSync(fx.calls);
    try {
      const { answer, code } = await control(cloneClient!, { op: 'rebirth', epochMs: Date.now(), entropy: entropy() });
      assert.equal(code, 1);
      assert.ok(!answer.ok);
      if (!answer.ok) {
        assert.equal(answer.step, 'reseed');
        assert.match(answer.error, /cannot reseed the kernel RNG: RNDRESEEDCRNG .*Operation not permitted/);
      }
      assert.equal(calls(fx.calls).length, 1, 'only perl ran');
    } finally {
      fs.rmSync(path.join(fx.dir, 'fail-reseed'));
    }
  });

  test('a failed mount is an error naming the path and the reason, and hello carries it', async () => {
    const next = makeKeys();
    const bad = path.join(fx.dir, 'missing');
    fs.writeFileSync(fx.disk, encodeConfigDisk(guestConfig(next, 'clone-2', [{ tag: 'badtag', type: '9p', path: bad, readonly: false }])));
    const { answer, code } = await control(cloneClient!, { op: 'rebirth', epochMs: Date.now(), entropy: entropy() });
    assert.equal(code, 1);
    assert.ok(!answer.ok);
    if (!answer.ok) {
      assert.equal(answer.step, 'mounts');
      assert.ok(answer.error.includes(bad), answer.error);
      assert.match(answer.error, /special device badtag does not exist/);
      assert.deepEqual(answer.mounted, []);
    }
    assert.match(fs.readFileSync(path.join(fx.run, 'mount-failed'), 'utf8'), new RegExp(`^${bad}\t`));

    // The keys were swapped before the mounts: the events stream is reached with the newest ones.
    const c = await connect(agent, { privateKey: next.clientPrivate, expectHostKey: next.hostPrivate });
    try {
      fs.writeFileSync(path.join(fx.run, 'config-failed'), 'config-env.js exited 1: the config is not valid JSON\n');
      fs.writeFileSync(path.join(fx.run, 'forward-address'), '10.0.3.15\n');
      const stream = await new Promise<ClientChannel>((resolve, reject) => c.subsys(EVENTS_SUBSYSTEM, (err, s) => (err ? reject(err) : resolve(s))));
      const hello = await new LineReader(stream).next((l) => l.type === 'hello', 10_000, 'hello');
      assert.deepEqual(agentEventProblems(hello), []);
      const problems = hello.problems as string[];
      assert.equal(problems.length, 2);
      assert.match(problems[0], /^config unreadable, booted with defaults: config-env.js exited 1/);
      assert.ok(problems[1].startsWith(`workspace mount failed: ${bad}: `), problems[1]);
      assert.equal(hello.forwardAddress, '10.0.3.15', 'the init set the forwarding NIC up');
      stream.close();
    } finally {
      fs.rmSync(path.join(fx.run, 'config-failed'), { force: true });
      fs.rmSync(path.join(fx.run, 'forward-address'), { force: true });
      c.end();
    }
  });

  test('a config disk without the magic is refused, keeping the current keys', async () => {
    fs.writeFileSync(fx.disk, Buffer.from('NOTCOVE!\n{}'));
    const { answer } = await control(cloneClient!, { op: 'rebirth', epochMs: Date.now(), entropy: entropy() });
    assert.ok(!answer.ok);
    if (!answer.ok) {
      assert.equal(answer.step, 'config');
      assert.match(answer.error, /magic/);
    }
  });
});

// What coved does after a restore: the template's keys over the agent port (qemu's agent.sock),
// rebirth, hang up, and the next host on the same port must meet the clone.
describe('agent control channel over the agent port', () => {
  let agent: RunningAgent;
  let fx: ReturnType<typeof makeFixture>;

  before(async () => {
    fx = makeFixture();
    agent = await startAgent({
      port: true,
      env: { COVE_AGENT_RUN_DIR: fx.run, COVE_AGENT_URANDOM: path.join(fx.dir, 'urandom'), COVE_AGENT_ETC: fx.etc, COVE_AGENT_SYSTEM_PATH: fx.bin },
    });
  });
  after(async () => {
    await agent?.stop();
    if (fx) fs.rmSync(fx.dir, { recursive: true, force: true });
  });

  const openHost = () => openAgentPort(agent);

  test('the next host on the port meets the clone', async () => {
    const clone = makeKeys();
    fs.writeFileSync(fx.disk, encodeConfigDisk(guestConfig(clone, 'clone-port', [])));
    const host1 = await openHost();
    const first = await connect(agent, { sock: host1, expectHostKey: agent.keys.hostPrivate });
    const { answer } = await control(first, { op: 'rebirth', epochMs: Date.now(), entropy: entropy() });
    assert.ok(answer.ok, JSON.stringify(answer));
    assert.deepEqual((answer as RebirthAnswer).mounted, []);
    // coved hangs up; the port's next host is a new SSH connection (the FIFO pair needs the old
    // host's ends closed, or two readers would share the agent's bytes).
    first.end();
    await waitFor(() => /port#1: connection closed/.test(agent.log()), 10_000, 'the first port session to close');
    host1.destroy();
    const host2 = await openHost();
    const next = await connect(agent, { sock: host2, privateKey: clone.clientPrivate, expectHostKey: clone.hostPrivate });
    try {
      assert.equal((await exec(next, 'echo via-port')).stdout, 'via-port\n');
    } finally {
      next.end();
      host2.destroy();
    }
  });
});

describe('the perl helper on this host', () => {
  const isRoot = process.getuid?.() === 0;
  const hasStrace = spawnSync('sh', ['-c', 'command -v strace']).status === 0;
  /** Runs the helper on `lines`, under `wrapper` (e.g. strace and its flags) when given. */
  const helper = (lines: string, wrapper: string[] = []) => {
    const [command, ...args] = [...wrapper, 'perl', '-e', SYSCALL_HELPER, '--', ...syscallNumbers()];
    return spawnSync(command, args, { input: lines });
  };

  // This mixes 64 random bytes into the host's own pool and makes its CRNG reseed, which any
  // `cat > /dev/urandom` by root does too; it proves the ioctl numbers and struct layout.
  test('reseeds the real /dev/urandom (RNDADDENTROPY, RNDRESEEDCRNG), request after request', { skip: !isRoot && 'needs root' }, () => {
    const line = requestLine({ reseed: { device: '/dev/urandom', entropy: crypto.randomBytes(64) } }).line;
    const r = helper(line + line);
    assert.equal(r.status, 0, r.stderr.toString());
    assert.match(r.stdout.toString(), /^reseed \d+\nend\nreseed \d+\nend\n$/);
  });

  test('refuses a device that is not a character device, and goes on to the next request', () => {
    const file = path.join(os.tmpdir(), `cove-not-a-device-${process.pid}`);
    fs.writeFileSync(file, '');
    try {
      const r = helper(requestLine({ reseed: { device: file, entropy: crypto.randomBytes(64) }, flush: file }).line + requestLine({ flush: file }).line);
      assert.equal(r.status, 0, r.stderr.toString());
      assert.match(r.stdout.toString(), new RegExp(`^fail reseed ${file} is not a character device\nend\nflush \\d+\nend\n$`));
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  // strace answers clock_settime itself (retval=0), so the host clock is never set.
  test('credits the entropy, reseeds, and sets CLOCK_REALTIME to the target plus the time spent since', { skip: (!hasStrace || !isRoot) && 'needs strace and root' }, () => {
    const target = BigInt(Date.now() - 86_400_000) * 1_000_000n;
    const then = process.hrtime.bigint();
    const { line } = requestLine({ reseed: { device: '/dev/urandom', entropy: crypto.randomBytes(64) }, clock: { epochMs: Number(target / 1_000_000n), receivedAt: then } });
    const r = helper(line, ['strace', '-qq', '-e', 'trace=clock_settime,ioctl', '-e', 'inject=clock_settime:retval=0']);
    if (r.status !== 0 && /ptrace|Operation not permitted/.test(r.stderr.toString())) return; // No ptrace in this container.
    assert.equal(r.status, 0, r.stderr.toString());
    const m = /clock_settime\(CLOCK_REALTIME, \{tv_sec=(\d+), tv_nsec=(\d+)\}\) = 0 \(INJECTED\)/.exec(r.stderr.toString());
    assert.ok(m, r.stderr.toString());
    const set = BigInt(m[1]) * 1_000_000_000n + BigInt(m[2]);
    const elapsed = process.hrtime.bigint() - then;
    assert.ok(set >= target && set <= target + elapsed, `set ${set} within [${target}, ${target + elapsed}]`);
    assert.match(r.stdout.toString(), /^reseed \d+\nclock \d+\nend\n$/);
    // The kernel took the entropy as 64 bytes worth 512 bits, then reseeded.
    assert.match(r.stderr.toString(), /ioctl\(\d+, RNDADDENTROPY, \{entropy_count=512, buf_size=64, buf=.*\) = 0/);
    assert.match(r.stderr.toString(), /ioctl\(\d+, RNDRESEEDCRNG\)\s+= 0/);
  });
});

describe('SyscallHelper: one perl, kept', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-helper-'));
  const file = path.join(dir, 'not-a-device');
  fs.writeFileSync(file, '');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('answers request after request from one perl process, and starts another after it is killed', async () => {
    const h = new SyscallHelper('/usr/bin:/bin');
    try {
      h.start();
      const pid = h.pid;
      assert.ok(pid, 'perl runs before the first request');
      assert.equal(typeof (await h.run({ flush: file })).flush, 'number');
      assert.equal(typeof (await h.run({ flush: file })).flush, 'number');
      assert.equal(h.pid, pid, 'the same perl answered both');
      process.kill(pid, 'SIGKILL');
      await waitFor(() => h.pid === null, 5000, 'the helper to see its perl die');
      assert.equal(typeof (await h.run({ flush: file })).flush, 'number');
      assert.ok(h.pid && h.pid !== pid, 'a new perl answered');
    } finally {
      h.stop();
    }
  });

  test('a request written to a perl that was killed, before its exit is seen, is answered by a new perl', async () => {
    const h = new SyscallHelper('/usr/bin:/bin');
    try {
      h.start();
      const pid = h.pid;
      assert.ok(pid);
      await h.run({ flush: file });
      process.kill(pid, 'SIGKILL');
      // Written at once: the helper still holds the dead perl, whose exit event has not come yet.
      assert.equal(h.pid, pid);
      assert.equal(typeof (await h.run({ flush: file })).flush, 'number');
      assert.ok(h.pid && h.pid !== pid, 'a new perl answered');
    } finally {
      h.stop();
    }
  });

  test('a perl that dies at every request fails it after one retry, naming the step', async () => {
    const bin = path.join(dir, 'dying');
    fs.mkdirSync(bin);
    const starts = path.join(dir, 'starts');
    fs.writeFileSync(path.join(bin, 'perl'), `#!/bin/sh\necho x >> ${starts}\nread line\nexit 3\n`, { mode: 0o755 });
    const h = new SyscallHelper(bin);
    try {
      await assert.rejects(h.run({ flush: file }), /^SystemError: cannot drop the config disk cache: perl exited \(code 3\)$/);
      assert.equal(fs.readFileSync(starts, 'utf8'), 'x\nx\n', 'two perls, one retry');
    } finally {
      h.stop();
    }
  });

  test('a failed op is an error naming it, and the same perl takes the next request', async () => {
    const h = new SyscallHelper('/usr/bin:/bin');
    try {
      await assert.rejects(h.run({ reseed: { device: file, entropy: crypto.randomBytes(8) }, flush: file }), (err: unknown) => {
        assert.ok(err instanceof SystemError);
        assert.equal(err.op, 'reseed');
        assert.match(err.message, /^cannot reseed the kernel RNG: .*not a character device$/);
        return true;
      });
      const pid = h.pid;
      assert.equal(typeof (await h.run({ flush: file })).flush, 'number');
      assert.equal(h.pid, pid);
    } finally {
      h.stop();
    }
  });

  test('a perl that does not answer is killed at the deadline, and a missing perl is named', async () => {
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'perl'), '#!/bin/sh\nexec /bin/sleep 30\n', { mode: 0o755 });
    const hung = new SyscallHelper(bin, 300);
    try {
      await assert.rejects(hung.run({ flush: file }), /^SystemError: cannot drop the config disk cache: perl did not answer within 0.3 s and was killed$/);
      assert.equal(hung.pid, null);
    } finally {
      hung.stop();
    }
    const none = new SyscallHelper(path.join(dir, 'empty'));
    await assert.rejects(none.run({ clock: { epochMs: Date.now(), receivedAt: process.hrtime.bigint() } }), /cannot step the clock: cannot run perl: .*ENOENT.*looked on PATH=/);
    assert.throws(() => requestLine({ flush: 'a b' }), /white space/);
  });
});
