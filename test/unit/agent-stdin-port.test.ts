// The agent's end of the stdin port (agent/stdin-port.ts), with a regular file standing in for the
// char device: what it opens, and the preamble it must read before a command gets the port. The
// real device (one opener, reads of 0 until the host connects) is exercised on a real VM in
// test/integration/data-channel.test.ts.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { STDOUT_PORT_WRAPPER } from '../../agent/exec-stream';
import { StdinPort } from '../../agent/stdin-port';

const NONCE = '0123456789abcdef0123456789abcdef';

describe('agent stdin port', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-stdin-port-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  function device(content: string): string {
    const p = path.join(dir, `port-${Math.random().toString(16).slice(2)}`);
    fs.writeFileSync(p, content);
    return p;
  }

  test('the preamble is read off the port exactly; what follows is left for the command', async () => {
    const dev = device(`${NONCE}stdin bytes`);
    const port = new StdinPort(() => dev).open(NONCE);
    assert.ok(port, 'the port opens');
    try {
      assert.equal(await StdinPort.preamble(port, 1000, () => false), null);
      const rest = Buffer.alloc(64);
      const n = fs.readSync(port.fd, rest, 0, rest.length, null);
      assert.equal(rest.subarray(0, n).toString(), 'stdin bytes');
    } finally {
      fs.closeSync(port.fd);
    }
  });

  test("another command's bytes, or an empty port past the deadline, are refused with the reason", async () => {
    const wrong = new StdinPort(() => device(`${'f'.repeat(32)}data`)).open(NONCE);
    assert.ok(wrong);
    assert.match((await StdinPort.preamble(wrong, 1000, () => false)) ?? '', /not this stream's preamble/);
    fs.closeSync(wrong.fd);
    // A file at its end reads 0, as the device does before the host connects.
    const silent = new StdinPort(() => device('')).open(NONCE);
    assert.ok(silent);
    const t0 = Date.now();
    assert.match((await StdinPort.preamble(silent, 200, () => false)) ?? '', /did not connect the stdin port within 0.2 s/);
    assert.ok(Date.now() - t0 >= 200, 'it waited for the deadline');
    assert.match((await StdinPort.preamble(silent, 60_000, () => true)) ?? '', /host went away/);
    fs.closeSync(silent.fd);
  });

  test('no port (a VM without one), a bad nonce, or a device that cannot be opened: null, so stdin is the stream', () => {
    assert.equal(new StdinPort(() => null).open(NONCE), null);
    assert.equal(new StdinPort(() => device(NONCE)).open('not-hex'), null);
    assert.equal(new StdinPort(() => device(NONCE)).open(undefined), null);
    assert.equal(new StdinPort(() => path.join(dir, 'missing')).open(NONCE), null);
  });

  test('as stdout: opened for reading the preamble and for the command to write', async () => {
    const dev = device(NONCE);
    const port = new StdinPort(() => dev).open(NONCE, 'stdout');
    assert.ok(port);
    try {
      assert.equal(port.as, 'stdout');
      assert.equal(await StdinPort.preamble(port, 1000, () => false), null);
      fs.writeSync(port.fd, 'out');
      assert.equal(fs.readFileSync(dev, 'utf8'), `${NONCE}out`);
    } finally {
      fs.closeSync(port.fd);
    }
  });

  test("the stdout wrapper: the command's bytes, then the marker, then its status; exit and exec end only the command", () => {
    const wrap = (command: string) => spawnSync('/bin/sh', ['-c', STDOUT_PORT_WRAPPER, 'cove-exec', command, NONCE], { encoding: 'utf8' });
    assert.deepEqual([wrap('echo hi; exit 3').stdout, wrap('echo hi; exit 3').status], [`hi\n${NONCE}`, 3]);
    assert.equal(wrap('exec printf abc').stdout, `abc${NONCE}`);
    assert.equal(wrap('echo "[$1][$#]"').stdout, `[][0]\n${NONCE}`, 'no positional parameters, as with sh -c');
    const killed = wrap('kill -9 $(sh -c "echo \\$PPID")');
    assert.deepEqual([killed.stdout, killed.status], [NONCE, 137]);
  });
});
