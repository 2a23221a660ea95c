// The guest init's config and mount handling, run on this host with bash and node: config-env.js
// on good and broken configs, cove_config_load (init-lib.sh) surviving every failure under
// `set -u` with defaults and a `cove: config unreadable` line, and cove_mount_share recording a
// failed mount for the agent to report, and cove_forward_nic (its MAC and address are the ones of
// contract/guest.ts) with its large-segment settings. Nothing here boots a VM; stubs of `mount`, `ip`,
// `tc` and `iptables` stand in.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GUEST_FORWARD_NIC } from '../../contract/guest';
import { REPO } from './agent-harness';

const LIB = path.join(REPO, 'tier-docker', 'rootfs', 'usr', 'lib', 'cove');
const CONFIG_ENV = path.join(LIB, 'config-env.js');
const INIT_LIB = path.join(LIB, 'init-lib.sh');

describe('guest init: config and mounts', () => {
  let dir: string;
  let run: string;
  let bin: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-init-'));
    run = path.join(dir, 'run');
    bin = path.join(dir, 'bin');
    fs.mkdirSync(run);
    fs.mkdirSync(bin);
    // mount -t TYPE -o OPTIONS TAG PATH: tag "badtag" does not exist; virtiofs is unknown for "no-vfs".
    fs.writeFileSync(
      path.join(bin, 'mount'),
      `#!/bin/sh
echo "mount $*" >> '${dir}/calls'
case "$5" in badtag) echo "mount: $6: special device $5 does not exist." >&2; exit 32 ;; esac
[ "$2" = virtiofs ] && [ "$5" = no-vfs ] && { echo "mount: $6: unknown filesystem type 'virtiofs'." >&2; exit 32; }
exit 0
`,
      { mode: 0o755 },
    );
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const configEnv = (text: string | null): { status: number | null; stdout: string; stderr: string } => {
    const file = path.join(dir, 'config.json');
    if (text === null) fs.rmSync(file, { force: true });
    else fs.writeFileSync(file, text);
    const r = spawnSync(process.execPath, [CONFIG_ENV, file], { encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  /** Runs `script` in bash under `set -u` with init-lib.sh sourced, cove-init's say(), and the stubs first on PATH. */
  const bash = (script: string, env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync('bash', ['-c', `set -u\nsay() { echo "cove: $*"; }\n. '${INIT_LIB}'\n${script}`], {
      encoding: 'utf8',
      env: { PATH: `${bin}:${process.env.PATH}`, COVE_RUN_DIR: run, COVE_CONFIG_ENV_JS: CONFIG_ENV, ...env },
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  test('config-env.js prints assignments for a good config', () => {
    const r = configEnv(
      JSON.stringify({
        name: 'n',
        hostname: "it's",
        mounts: [{ tag: 'cove-ws', type: '9p', path: '/home/me/a b', readonly: true }, { path: '/w' }],
        insecureRegistries: ['reg:5000'],
        aslr: false,
      }),
    );
    assert.equal(r.status, 0, r.stderr);
    const shown = bash(`eval "$(cat <<'EOF'\n${r.stdout}EOF\n)"; printf '%s|' "$COVE_HOSTNAME" "$COVE_ADDRESS" "\${COVE_MOUNT_PATHS[@]}" "\${COVE_MOUNT_TYPES[@]}" "\${COVE_MOUNT_RO[@]}" "\${COVE_MOUNT_TAGS[@]}" "\${COVE_INSECURE_REGISTRIES[@]}" "$COVE_ASLR"`);
    assert.equal(shown.stdout, "it's|10.0.2.15/24|/home/me/a b|/w|9p|virtiofs|ro|rw|cove-ws|cove-ws|reg:5000|0|");
    for (const [aslr, value] of [[true, '2'], [undefined, '']] as const) {
      const other = configEnv(JSON.stringify({ name: 'n', aslr }));
      assert.equal(other.status, 0, other.stderr);
      assert.match(other.stdout, new RegExp(`^COVE_ASLR='${value}'$`, 'm'), `aslr ${String(aslr)}`);
    }
  });

  test('config-env.js refuses a broken config with one line that never quotes it', () => {
    const secret = 'PRIVATEKEYMATERIAL';
    const cases: [string | null, RegExp][] = [
      [null, /cannot read .*config\.json \(ENOENT\)/],
      [`{"hostKey": "${secret}"`, /is not JSON \(at byte \d+\)/],
      ['null', /is not a JSON object/],
      ['[]', /is not a JSON object/],
      [JSON.stringify({ hostKey: secret, mounts: [null] }), /mounts\[0\] .* is not an object/],
      [JSON.stringify({ hostKey: secret, mounts: {} }), /mounts in .* is not a list/],
      [JSON.stringify({ hostKey: secret, mounts: [{ path: 'relative' }] }), /mounts\[0\]\.path .* not an absolute path/],
      [JSON.stringify({ hostKey: secret, network: 'x' }), /network in .* is not an object/],
      [JSON.stringify({ hostKey: secret, hostname: 'a\nb' }), /hostname in .* is not a one-line string/],
      [JSON.stringify({ hostKey: secret, aslr: 'off' }), /aslr in .* is not true or false/],
    ];
    for (const [text, expected] of cases) {
      const r = configEnv(text);
      assert.equal(r.status, 1, `exit 1 for ${text}`);
      assert.equal(r.stdout, '', 'nothing to evaluate');
      assert.match(r.stderr, expected);
      assert.equal(r.stderr.trim().split('\n').length, 1);
      assert.ok(!r.stderr.includes(secret), 'the reason does not quote the config');
    }
  });

  test('cove_config_load survives every failure under set -u, with defaults and a cove: line', () => {
    const file = path.join(dir, 'config.json');
    const failing: [string, NodeJS.ProcessEnv, RegExp][] = [
      ['{broken', {}, /^cove: config unreadable: .* is not JSON \(at byte \d+\); using defaults$/m],
      ['{}', { COVE_CONFIG_ENV_JS: path.join(dir, 'missing.js') }, /^cove: config unreadable: .*Cannot find module.*; using defaults$/m],
      ['{}', { COVE_CONFIG_ENV_JS: writeScript(dir, 'syntax.js', "process.stdout.write('X=(unclosed\\n')") }, /config-env.js printed something that is not shell; using defaults/],
      ['{}', { COVE_CONFIG_ENV_JS: writeScript(dir, 'unset.js', "process.stdout.write('COVE_HOSTNAME=$NOT_SET\\n')") }, /config-env.js printed shell that fails; using defaults/],
      ['{}', { COVE_CONFIG_ENV_JS: writeScript(dir, 'crash.js', 'process.exit(3)') }, /config unreadable: config-env.js exited 3; using defaults/],
    ];
    for (const [text, env, line] of failing) {
      fs.writeFileSync(file, text);
      const r = bash(`cove_config_load '${file}'; echo "after $COVE_HOSTNAME $COVE_ADDRESS $COVE_GATEWAY $COVE_DNS $COVE_RESIZE_ROOT \${#COVE_MOUNT_PATHS[@]} \${#COVE_INSECURE_REGISTRIES[@]} [$COVE_ASLR]"`, env);
      assert.equal(r.status, 0, `the script goes on: ${r.stderr}`);
      assert.match(r.stdout, line);
      assert.match(r.stdout, /^after cove 10\.0\.2\.15\/24 10\.0\.2\.2 10\.0\.2\.3 yes 0 0 \[\]$/m, 'the defaults leave randomization as the kernel has it');
      assert.ok(fs.readFileSync(path.join(run, 'config-failed'), 'utf8').trim().length > 0, 'the reason is kept for the agent');
      assert.ok(!fs.existsSync(path.join(run, 'config-env.err')));
    }
    // A good config clears the record.
    fs.writeFileSync(file, JSON.stringify({ hostname: 'good', mounts: [{ path: '/x' }] }));
    const ok = bash(`cove_config_load '${file}'; echo "$COVE_HOSTNAME \${COVE_MOUNT_PATHS[*]}"`);
    assert.equal(ok.stdout, 'good /x\n');
    assert.ok(!fs.existsSync(path.join(run, 'config-failed')));
  });

  test('cove_mount_share mounts like the agent, falls back to 9p, and records a failure', () => {
    const ws = path.join(dir, 'ws');
    const cache = path.join(dir, 'cache');
    const bad = path.join(dir, 'bad');
    const r = bash(`cove_mount_share cove-ws virtiofs '${ws}' rw; cove_mount_share no-vfs virtiofs '${cache}' ro; cove_mount_share badtag 9p '${bad}' rw || echo "returned $?"`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `cove: workspace mounted ${ws} (virtiofs)`,
      `cove: workspace mounted ${cache} (9p)`,
      `cove: workspace mount FAILED ${bad}: tag badtag: 9p: mount: ${bad}: special device badtag does not exist.`,
      'returned 1',
    ]);
    assert.equal(fs.readFileSync(path.join(run, 'mounts'), 'utf8'), `${ws}\n${cache}\n`);
    assert.equal(fs.readFileSync(path.join(run, 'mount-failed'), 'utf8'), `${bad}\ttag badtag: 9p: mount: ${bad}: special device badtag does not exist.\n`);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'calls'), 'utf8').trim().split('\n'), [
      `mount -t virtiofs -o rw cove-ws ${ws}`,
      `mount -t virtiofs -o ro no-vfs ${cache}`,
      `mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=none no-vfs ${cache}`,
      `mount -t 9p -o rw,trans=virtio,version=9p2000.L,msize=512000,cache=none badtag ${bad}`,
    ]);
  });

  test('cove_forward_nic sets up the NIC with the forwarding MAC, records its address, and says why when it cannot', () => {
    const sys = path.join(dir, 'sys-net');
    for (const [nic, mac] of [['eth0', '52:54:00:12:34:56'], ['eth1', GUEST_FORWARD_NIC.mac]]) {
      fs.mkdirSync(path.join(sys, nic), { recursive: true });
      fs.writeFileSync(path.join(sys, nic, 'address'), `${mac}\n`);
    }
    // ip, tc, iptables: record their arguments; ip fails `addr add` when FAIL_IP is set, tc fails
    // adding its filter when FAIL_TC is set.
    const calls = path.join(dir, 'ip-calls');
    fs.writeFileSync(path.join(bin, 'ip'), `#!/bin/sh\necho "ip $*" >> '${calls}'\n[ -n "\${FAIL_IP:-}" ] && [ "$1" = addr ] && { echo "RTNETLINK answers: File exists" >&2; exit 2; }\nexit 0\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(bin, 'tc'), `#!/bin/sh\necho "tc $*" >> '${calls}'\n[ -n "\${FAIL_TC:-}" ] && [ "$1 $2" = "filter add" ] && { printf 'Error: Unknown action "pedit".\\nUsage: ...\\n' >&2; exit 1; }\nexit 0\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(bin, 'iptables'), `#!/bin/sh\necho "iptables $*" >> '${calls}'\nexit 0\n`, { mode: 0o755 });
    const forward = path.join(run, 'forward-address');
    const setUp = bash('cove_config_defaults; cove_forward_nic; echo "rc=$?"', { COVE_SYS_NET: sys });
    const { mtu } = GUEST_FORWARD_NIC;
    assert.equal(setUp.stdout, `cove: forwarding NIC eth1: ${GUEST_FORWARD_NIC.address}/${GUEST_FORWARD_NIC.prefixLength}\ncove: forwarding NIC eth1: MTU ${mtu}, MSS ${mtu - 40}, untracked\nrc=0\n`, setUp.stderr);
    assert.equal(fs.readFileSync(forward, 'utf8'), `${GUEST_FORWARD_NIC.address}\n`);
    const filter =
      'tc filter add dev eth1 parent ffff: protocol ip prio 1 u32 match u8 0x45 0xff at 0 match ip protocol 6 0xff ' +
      'match u8 0x60 0xf0 at 32 match u8 0x02 0x02 at 33 match u32 0x020405b4 0xffffffff at 40 ' +
      `action pedit munge offset 40 u32 set 0x0204${(mtu - 40).toString(16)} pipe action csum tcp`;
    assert.deepEqual(fs.readFileSync(calls, 'utf8').trim().split('\n'), [
      'ip link set eth1 up',
      `ip addr add ${GUEST_FORWARD_NIC.address}/${GUEST_FORWARD_NIC.prefixLength} dev eth1`,
      `ip link set eth1 mtu ${mtu}`,
      'tc qdisc add dev eth1 ingress',
      filter,
      'iptables -t raw -I PREROUTING -i eth1 -p tcp -j CT --notrack',
    ]);

    // A kernel without one of the settings' modules: the NIC still forwards, and the line says what failed.
    fs.rmSync(calls);
    const slower = bash('cove_config_defaults; cove_forward_nic; echo "rc=$?"', { COVE_SYS_NET: sys, FAIL_TC: '1' });
    assert.equal(
      slower.stdout,
      `cove: forwarding NIC eth1: ${GUEST_FORWARD_NIC.address}/${GUEST_FORWARD_NIC.prefixLength}\n` +
        'cove: forwarding NIC eth1: not all large-segment settings took (the MSS rewrite: Error: Unknown action "pedit". Usage: ...); forwarded ports are slower\nrc=0\n',
    );
    assert.equal(fs.readFileSync(forward, 'utf8'), `${GUEST_FORWARD_NIC.address}\n`, 'the NIC is still used');
    assert.match(fs.readFileSync(calls, 'utf8'), /iptables -t raw -I PREROUTING -i eth1 -p tcp -j CT --notrack/, 'the other settings are still made');

    const failed = bash('cove_config_defaults; cove_forward_nic; echo "rc=$?"', { COVE_SYS_NET: sys, FAIL_IP: '1' });
    assert.match(failed.stdout, /^cove: forwarding NIC eth1: cannot set it up \(RTNETLINK answers: File exists\); forwarded ports use the data channel\nrc=1\n$/);
    assert.equal(fs.existsSync(forward), false, 'no address is recorded for a NIC that is not set up');

    fs.rmSync(path.join(sys, 'eth1'), { recursive: true });
    const none = bash('cove_config_defaults; cove_forward_nic; echo "rc=$?"', { COVE_SYS_NET: sys });
    assert.equal(none.stdout, 'rc=0\n', 'a VM without the NIC boots quietly');
    assert.equal(fs.existsSync(forward), false);
  });

  test('cove-init sources init-lib.sh and no longer evaluates config-env.js directly', () => {
    const init = fs.readFileSync(path.join(REPO, 'tier-docker', 'rootfs', 'sbin', 'cove-init'), 'utf8');
    assert.match(init, /^\. \/usr\/lib\/cove\/init-lib\.sh$/m);
    assert.match(init, /^cove_config_load \/run\/cove\/config\.json$/m);
    assert.match(init, /^cove_forward_nic \|\| true$/m);
    assert.doesNotMatch(init, /eval "\$\(node/);
    assert.equal(spawnSync('bash', ['-n', path.join(REPO, 'tier-docker', 'rootfs', 'sbin', 'cove-init')]).status, 0);
  });
});

function writeScript(dir: string, name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `${body}\n`);
  return file;
}
