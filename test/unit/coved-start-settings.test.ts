// coved refuses, at its start, a setting in its environment it cannot take: it exits 2 with a line
// per bad setting naming the variable and what it takes, before it takes the home's lock or touches
// a sandbox; and a client that started it says so at once, with those lines, instead of waiting.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { connect } from '../../contract/client';
import { ErrorCodes } from '../../contract/protocol';
import { SettingError, envChoice, envPositive, envSecondsMs, envSecondsOrNeverMs, envSwitch, envWhole } from '../../vmm-host/coved/env-parse';
import { SETTING_KEYS, settingProblems } from '../../vmm-host/coved/settings';

const COVED = path.join(__dirname, '..', '..', 'vmm-host', 'coved', 'main.js');

/** The environment without any of coved's settings (the test runner's own may carry some). */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !SETTING_KEYS.includes(k))), ...extra };
}

function withHome(run: (home: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-start-'));
    try {
      await run(home);
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  };
}

test('a COVE_GUEST_ASLR coved cannot take stops it at start, naming it and the values it takes', withHome((home) => {
  const r = spawnSync(process.execPath, [COVED], { env: cleanEnv({ COVE_HOME: home, COVE_GUEST_ASLR: 'maybe' }), encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /COVE_GUEST_ASLR=maybe is not a setting: set it to on .* or off, or unset it/);
  assert.ok(!fs.existsSync(path.join(home, 'coved.pid')), 'no lock taken');
  assert.ok(!fs.existsSync(path.join(home, 'coved.sock')), 'nothing served');
}));

test('every bad setting is named at once, each with what it takes, and nothing is started', withHome((home) => {
  const bad = {
    COVE_QUIET_CPU: 'lots',
    COVE_PAUSE_AFTER: '-5',
    COVE_SLEEP_AFTER: '1e3',
    COVE_QEMU: path.join(home, 'no-such-qemu'),
    COVE_NEVER_FORWARD: '5432,http',
    COVE_WARM: 'maybe',
    COVE_CONSOLE_MAX_BYTES: '10',
    COVE_DATA_CHANNEL: 'sometimes',
    COVE_TCG_TB_MIB: 'big',
  };
  const r = spawnSync(process.execPath, [COVED], { env: cleanEnv({ COVE_HOME: home, ...bad }), encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /COVE_QUIET_CPU="lots" is not a setting: it takes a share of one CPU greater than 0/);
  assert.match(r.stderr, /COVE_PAUSE_AFTER="-5" is not a setting: it takes a number of seconds \(0 turns it off\)/);
  assert.match(r.stderr, /COVE_SLEEP_AFTER="1e3" is not a setting/);
  assert.match(r.stderr, /COVE_QEMU=".*no-such-qemu" is not a setting: it takes the path of an executable file, and this is not one/);
  assert.match(r.stderr, /COVE_NEVER_FORWARD: cannot read "http"/);
  assert.match(r.stderr, /COVE_WARM="maybe" is not a setting: it takes on or off/);
  assert.match(r.stderr, /COVE_CONSOLE_MAX_BYTES="10" is not a setting: it takes a whole number of bytes, at least 4096/);
  assert.match(r.stderr, /COVE_DATA_CHANNEL="sometimes"/);
  assert.match(r.stderr, /COVE_TCG_TB_MIB=big is not a translation cache size/);
  assert.match(r.stderr, /coved cannot start: 9 settings in its environment above; fix or unset COVE_CONSOLE_MAX_BYTES, COVE_DATA_CHANNEL, COVE_NEVER_FORWARD, COVE_PAUSE_AFTER, COVE_QEMU, COVE_QUIET_CPU, COVE_SLEEP_AFTER, COVE_TCG_TB_MIB, COVE_WARM/);
  assert.ok(!fs.existsSync(path.join(home, 'coved.pid')), 'no lock taken');
}));

test('a client that starts coved with a bad setting fails at once with what coved said', withHome(async (home) => {
  const started = Date.now();
  await assert.rejects(
    connect({ home, covedEntry: COVED, env: { COVE_PAUSE_AFTER: 'soon' }, startTimeoutMs: 60_000 }),
    (e: Error & { code?: number; hint?: string }) => {
      assert.equal(e.code, ErrorCodes.invalidInput);
      assert.match(e.message, /^coved could not start \(exit status 2\):\n/);
      assert.match(e.message, /\nCOVE_PAUSE_AFTER="soon" is not a setting: it takes a number of seconds/);
      assert.doesNotMatch(e.message, /\d{4}-\d\d-\d\dT/, 'log timestamps are left out');
      assert.match(e.hint ?? '', /coved\.log/);
      return true;
    },
  );
  assert.ok(Date.now() - started < 30_000, `it did not wait for the start deadline (${Date.now() - started} ms)`);
}));

test('the settings a user would write are taken, unset or empty means the default', () => {
  assert.deepEqual(settingProblems(cleanEnv()), []);
  const good = cleanEnv({
    COVE_ACCEL: 'TCG',
    COVE_BOOT_TIMEOUT: '900',
    COVE_SOCKET_WAIT: '2.5',
    COVE_PAUSE_AFTER: '0',
    COVE_SLEEP_AFTER: ' 3600 ',
    COVE_QUIET_CPU: '0.9',
    COVE_CONSOLE_MAX_BYTES: '4096',
    COVE_DATA_CHANNEL: 'Off',
    COVE_WARM: '0',
    COVE_NETWORK: 'user',
    COVE_QEMU: process.execPath,
    COVE_DOCKER: 'docker',
    COVE_DEBIAN_MIRROR: 'http://deb.debian.org/debian',
    COVE_MAX_AUTO_PORTS: '0',
    COVE_NEVER_FORWARD: '5432,8000-8010',
    COVE_TCG_TB_MIB: '0',
    COVE_GUEST_ASLR: 'on',
    COVE_VIRTIOFSD: '',
  });
  assert.deepEqual(settingProblems(good), []);
  const bad = settingProblems(cleanEnv({ COVE_ACCEL: 'hvf', COVE_NETWORK: 'tap', COVE_DEBIAN_MIRROR: 'deb.debian.org', COVE_PASST: 'passt', COVE_BOOT_TIMEOUT: '0' }));
  assert.deepEqual(bad.map((p) => p.key), ['COVE_ACCEL', 'COVE_BOOT_TIMEOUT', 'COVE_DEBIAN_MIRROR', 'COVE_NETWORK', 'COVE_PASST']);
  assert.match(bad[0].message, /it takes one of auto, kvm, tcg/);
  assert.match(bad[1].message, /greater than 0/);
  assert.match(bad[2].message, /http\(s\) URL of a Debian mirror/);
  assert.match(bad[3].message, /one of auto, passt, user/);
  assert.match(bad[4].message, /the path of an executable file/);
});

test('the readers: strict decimals, ranges, switches and choices', () => {
  const k = 'COVE_X';
  assert.equal(envSecondsMs({}, k, 7), 7);
  assert.equal(envSecondsMs({ [k]: '1.5' }, k, 7), 1500);
  for (const v of ['0', '-1', 'abc', '0x10', 'Infinity', '1e3', '1.']) assert.throws(() => envSecondsMs({ [k]: v }, k, 7), SettingError, v);
  assert.equal(envSecondsOrNeverMs({ [k]: '0' }, k, 7), 0);
  assert.equal(envSecondsOrNeverMs({ [k]: '  ' }, k, 7), 7);
  assert.equal(envPositive({ [k]: '64' }, k, 1, 64, 'x'), 64);
  assert.throws(() => envPositive({ [k]: '65' }, k, 1, 64, 'x'), SettingError);
  assert.equal(envWhole({ [k]: '4096' }, k, 1, 4096, 8192, 'x'), 4096);
  assert.throws(() => envWhole({ [k]: '4095' }, k, 1, 4096, 8192, 'x'), SettingError);
  assert.throws(() => envWhole({ [k]: '4096.5' }, k, 1, 4096, 8192, 'x'), SettingError);
  for (const v of ['on', 'YES', '1', 'true']) assert.equal(envSwitch({ [k]: v }, k, false), true, v);
  for (const v of ['off', 'No', '0', 'FALSE']) assert.equal(envSwitch({ [k]: v }, k, true), false, v);
  assert.throws(() => envSwitch({ [k]: 'maybe' }, k, true), /COVE_X="maybe" is not a setting: it takes on or off/);
  assert.equal(envChoice({ [k]: 'B' }, k, ['a', 'b'] as const), 'b');
  assert.equal(envChoice({}, k, ['a', 'b'] as const), null);
  assert.throws(() => envChoice({ [k]: 'c' }, k, ['a', 'b'] as const), /it takes one of a, b/);
});
