// The `cove-control` subsystem (contract/control.ts has the types, PROTOCOL.md the prose): one
// JSON request line in, one JSON answer line out, per channel. It turns a restored clone of a
// template into its own sandbox (rebirth) and prepares a sandbox for saving and resumes it
// afterwards (suspend, resume), all inside the running agent: a new node process costs seconds
// under TCG. Requests run one at a time, in arrival order.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServerChannel } from 'ssh2';
import {
  CONTROL_ENTROPY_BYTES,
  CONTROL_MAX_REQUEST_BYTES,
  type ControlAnswer,
  type ControlFailure,
  type ControlRequest,
  type ControlStep,
  type RebirthAnswer,
  type ResumeAnswer,
  type StepTimes,
  type SuspendAnswer,
} from '../contract/control';
import { setAslr } from './aslr';
import { loadConfig, parseConfig, readConfigDisk, type AgentConfig } from './config';
import { errorText, log } from './log';
import { mountShare, readMountList, shareHeldElsewhere, unmountPath, writeMountFailures, writeMountList, type MountOutcome } from './mounts';
import { round, runCommand, SyscallHelper, SystemError } from './system';

/** How long a client gets to send its request line after opening the channel. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Wall clocks before this (2020-01-01) or after 2200 are refused as garbage. */
const MIN_EPOCH_MS = 1_577_836_800_000;
const MAX_EPOCH_MS = 7_258_118_400_000;

export interface ControlOptions {
  /** Where the init keeps the config JSON; rebirth rewrites it. */
  configPath: string;
  /** The init's run folder: config-device, mounts, mount-failed, config-failed. */
  runDir: string;
  /** The kernel RNG device. */
  urandom: string;
  /** Where hostname and hosts are written. */
  etcDir: string;
  /** The PATH for perl, mount, umount and sync. */
  systemPath: string;
  /** The kernel's hostname (a sysctl): the hostname is written here, no command is run. */
  hostnameSysctl: string;
  /** The sysctl the config's `aslr` goes to. */
  aslrSysctl: string;
}

/** A request the agent will not run; the message says what is wrong with it. */
export class RequestError extends Error {
  override name = 'RequestError';
}

/** A step that failed; `step` is where, the message what to do. */
class StepError extends Error {
  override name = 'StepError';
  constructor(
    readonly step: ControlStep,
    message: string,
    readonly extra: Partial<ControlFailure> = {},
  ) {
    super(message);
  }
}

/** Checks one request line; throws a RequestError saying what is wrong. */
export function parseRequest(line: string): ControlRequest {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch {
    throw new RequestError('the request is not a JSON line; send one JSON object followed by a newline');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new RequestError('the request must be a JSON object with an "op"');
  const r = doc as Record<string, unknown>;
  const bool = (name: string): boolean => {
    const value = r[name];
    if (typeof value !== 'boolean') throw new RequestError(`${String(r.op)} needs "${name}": true or false`);
    return value;
  };
  switch (r.op) {
    case 'rebirth':
      return { op: 'rebirth', epochMs: epochOf(r), entropy: entropyOf(r) };
    case 'resume':
      return { op: 'resume', epochMs: epochOf(r), entropy: entropyOf(r), remount: bool('remount') };
    case 'suspend':
      return { op: 'suspend', unmount: bool('unmount') };
    default:
      throw new RequestError(`unknown op ${JSON.stringify(r.op)}; the ops are rebirth, suspend and resume`);
  }
}

function epochOf(r: Record<string, unknown>): number {
  const v = r.epochMs;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < MIN_EPOCH_MS || v > MAX_EPOCH_MS) {
    throw new RequestError(`${String(r.op)} needs "epochMs": the host's wall clock in ms since 1970 (Date.now())`);
  }
  return v;
}

function entropyOf(r: Record<string, unknown>): string {
  const v = r.entropy;
  const expected = Math.ceil(CONTROL_ENTROPY_BYTES / 3) * 4;
  if (typeof v !== 'string' || v.length !== expected || !/^[A-Za-z0-9+/]+={0,2}$/.test(v) || Buffer.from(v, 'base64').length !== CONTROL_ENTROPY_BYTES) {
    throw new RequestError(`${String(r.op)} needs "entropy": ${CONTROL_ENTROPY_BYTES} random bytes from the host, base64 (${expected} characters)`);
  }
  return v;
}

export class Control {
  private tail: Promise<unknown> = Promise.resolve();
  private readonly helper: SyscallHelper;

  constructor(
    private readonly opts: ControlOptions,
    /** Makes every new SSH connection use the new host key and authorized keys. */
    private readonly swapKeys: (config: AgentConfig) => void,
  ) {
    this.helper = new SyscallHelper(opts.systemPath);
  }

  /**
   * Starts the perl helper at the agent's start, so that it is parked in a template and a clone's
   * rebirth finds it running.
   */
  start(): void {
    this.helper.start();
  }

  stop(): void {
    this.helper.stop();
  }

  /** Serves one `cove-control` channel: reads the request line, runs it, answers, closes. */
  serve(channel: ServerChannel, id: string): void {
    let buffer = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => finish(null, 'no request line within 30 s; write one JSON line right after opening the channel'), REQUEST_TIMEOUT_MS);
    const finish = (line: string | null, problem?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      channel.removeAllListeners('data');
      channel.resume(); // Anything after the request line is ignored.
      if (line === null) {
        this.answer(channel, id, { ok: false, step: 'request', error: problem ?? 'no request' });
        return;
      }
      const receivedAt = process.hrtime.bigint();
      let request: ControlRequest;
      try {
        request = parseRequest(line);
      } catch (err) {
        this.answer(channel, id, { ok: false, step: 'request', error: errorText(err) });
        return;
      }
      log(`${id}: control ${request.op}`);
      void this.run(request, receivedAt).then((answer) => this.answer(channel, id, answer));
    };
    channel.on('data', (d: Buffer) => {
      buffer = Buffer.concat([buffer, d]);
      const nl = buffer.indexOf(0x0a);
      if (nl >= 0 && nl <= CONTROL_MAX_REQUEST_BYTES) finish(buffer.subarray(0, nl).toString('utf8'));
      else if (buffer.length > CONTROL_MAX_REQUEST_BYTES) finish(null, `the request is longer than ${CONTROL_MAX_REQUEST_BYTES} bytes; a request is one short JSON line`);
    });
    channel.on('end', () => {
      if (buffer.length > 0) finish(buffer.toString('utf8'));
      else finish(null, 'the channel ended without a request line');
    });
    channel.on('close', () => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
      }
    });
    channel.on('error', (err: Error) => log(`${id}: control channel: ${errorText(err)}`));
  }

  /** Runs a request after every earlier one has finished; never rejects. */
  run(request: ControlRequest, receivedAt: bigint = process.hrtime.bigint()): Promise<ControlAnswer> {
    const result = this.tail.then(() => this.runNow(request, receivedAt));
    this.tail = result.catch(() => undefined);
    return result;
  }

  private async runNow(request: ControlRequest, receivedAt: bigint): Promise<ControlAnswer> {
    const started = performance.now();
    try {
      let answer: ControlAnswer;
      if (request.op === 'rebirth') answer = await this.rebirth(request.epochMs, Buffer.from(request.entropy, 'base64'), receivedAt);
      else if (request.op === 'resume') answer = await this.resume(request.epochMs, Buffer.from(request.entropy, 'base64'), receivedAt, request.remount);
      else answer = await this.suspend(request.unmount);
      log(`control ${request.op}: ok in ${round(performance.now() - started)} ms${'ms' in answer ? ` ${JSON.stringify(answer.ms)}` : ''}`);
      return answer;
    } catch (err) {
      const failure: ControlFailure =
        err instanceof StepError ? { ok: false, step: err.step, error: err.message, ...err.extra } : { ok: false, error: `the agent failed unexpectedly: ${errorText(err)}; see /var/log/cove/agent.log` };
      log(`control ${request.op}: failed${failure.step ? ` at ${failure.step}` : ''}: ${failure.error}`);
      return failure;
    }
  }

  private async rebirth(epochMs: number, entropy: Buffer, receivedAt: bigint): Promise<RebirthAnswer> {
    const ms: StepTimes = { reseed: 0, clock: 0, config: 0, keys: 0, hostname: 0, mounts: 0 };
    const device = this.configDevice();
    // Steps 1 and 2 (and dropping the config disk's stale cache) in one request to the perl helper.
    const sys = await this.syscalls(entropy, epochMs, receivedAt, device);
    ms.reseed = sys.reseed;
    ms.clock = sys.clock;

    let t = performance.now();
    let config: AgentConfig;
    try {
      const text = readConfigDisk(device);
      config = parseConfig(text, `the config disk ${device}`);
      writePrivate(this.opts.configPath, text);
      fs.rmSync(path.join(this.opts.runDir, 'config-failed'), { force: true });
    } catch (err) {
      throw new StepError('config', errorText(err));
    }
    ms.config = round(performance.now() - t + sys.flush);

    t = performance.now();
    try {
      this.swapKeys(config);
    } catch (err) {
      throw new StepError('keys', `ssh2 refused the new host key (${errorText(err)}); the config disk must hold an OpenSSH ed25519 private key`);
    }
    ms.keys = round(performance.now() - t);

    setAslr(config.aslr, this.opts.aslrSysctl, 'rebirth: ');

    t = performance.now();
    this.setHostname(config.hostname);
    ms.hostname = round(performance.now() - t);

    t = performance.now();
    const mounted = await this.mountAll(config);
    ms.mounts = round(performance.now() - t);
    return { ok: true, ms, hostname: config.hostname, mounted };
  }

  private async resume(epochMs: number, entropy: Buffer, receivedAt: bigint, remount: boolean): Promise<ResumeAnswer> {
    const ms: StepTimes = { reseed: 0, clock: 0, config: 0, keys: 0, hostname: 0, mounts: 0 };
    const sys = await this.syscalls(entropy, epochMs, receivedAt, null);
    ms.reseed = sys.reseed;
    ms.clock = sys.clock;
    let t = performance.now();
    let config: AgentConfig;
    try {
      config = loadConfig(this.opts.configPath);
    } catch (err) {
      throw new StepError('config', errorText(err));
    }
    ms.config = round(performance.now() - t);
    t = performance.now();
    const mounted = remount ? await this.mountAll(config) : [];
    ms.mounts = round(performance.now() - t);
    return { ok: true, ms, hostname: config.hostname, mounted };
  }

  private async suspend(unmount: boolean): Promise<SuspendAnswer> {
    await this.sync();
    if (!unmount) return { ok: true, unmounted: [] };
    const listed = readMountList(this.opts.runDir);
    const unmounted: string[] = [];
    const busy: string[] = [];
    const failed: string[] = [];
    for (const where of [...listed].reverse()) {
      // A container's bind mount keeps the share in use in its own mount namespace: unmounting it
      // here would succeed, and it could not be mounted here again until that container ends.
      const holders = shareHeldElsewhere(where);
      if (holders.length > 0) {
        busy.push(`${where} (bind-mounted by ${holders.slice(0, 3).join(', ')})`);
        continue;
      }
      const outcome = await unmountPath(this.opts.systemPath, where);
      if (outcome === 'unmounted' || outcome === 'not-mounted') unmounted.push(where);
      else if (outcome === 'busy') busy.push(where);
      else failed.push(`${where}: ${outcome.error}`);
    }
    if (busy.length > 0 || failed.length > 0) {
      // Put back what this request took away, so the sandbox goes on as before.
      const back = await this.remount(unmounted.filter((p) => listed.includes(p)).reverse());
      const stillGone = unmounted.filter((p) => !back.includes(p));
      writeMountList(this.opts.runDir, listed.filter((p) => !stillGone.includes(p)));
      const parts: string[] = [];
      if (busy.length > 0) parts.push(`busy: ${busy.join(', ')} (a process in the guest has a file or directory open there, e.g. a shell's working directory or a container's bind mount; stop it and ask again)`);
      if (failed.length > 0) parts.push(`cannot unmount ${failed.join('; ')}`);
      if (stillGone.length > 0) parts.push(`and could not mount again: ${stillGone.join(', ')}`);
      throw new StepError('unmount', `cannot unmount every share; ${parts.join('; ')}`, busy.length > 0 ? { busy } : {});
    }
    writeMountList(this.opts.runDir, []);
    await this.sync();
    return { ok: true, unmounted };
  }

  private configDevice(): string {
    const pointer = path.join(this.opts.runDir, 'config-device');
    let device = '';
    try {
      device = fs.readFileSync(pointer, 'utf8').trim();
    } catch {
      // Reported below.
    }
    if (!device) throw new StepError('config', `${pointer} names no config disk (the initramfs writes it when it finds one); the template must boot with a config disk attached`);
    return device;
  }

  private async syscalls(entropy: Buffer, epochMs: number, receivedAt: bigint, flush: string | null): Promise<{ reseed: number; clock: number; flush: number }> {
    try {
      const ms = await this.helper.run({
        reseed: { device: this.opts.urandom, entropy },
        clock: { epochMs, receivedAt },
        ...(flush ? { flush } : {}),
      });
      return { reseed: ms.reseed ?? 0, clock: ms.clock ?? 0, flush: ms.flush ?? 0 };
    } catch (err) {
      if (err instanceof SystemError) {
        const step: ControlStep = err.op === 'flush' ? 'config' : err.op;
        throw new StepError(step, `${err.message}; the agent must run as root in the guest, with perl (perl-base) installed`);
      }
      throw err;
    }
  }

  private setHostname(name: string): void {
    try {
      // What hostname(1) does, without starting it: the kernel's name, then the files cove-init writes.
      fs.writeFileSync(this.opts.hostnameSysctl, `${name}\n`);
    } catch (err) {
      throw new StepError('hostname', `cannot set the hostname to ${name} (${this.opts.hostnameSysctl}): ${errorText(err)}`);
    }
    try {
      fs.writeFileSync(path.join(this.opts.etcDir, 'hostname'), `${name}\n`);
      fs.writeFileSync(path.join(this.opts.etcDir, 'hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${name}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
    } catch (err) {
      throw new StepError('hostname', `cannot write ${this.opts.etcDir}/hostname or hosts: ${errorText(err)}`);
    }
  }

  /**
   * Mounts every mount of `config` that the mounts file does not list yet, in config order, as the
   * init does; records each success in the mounts file and the failures in mount-failed. Throws
   * naming every path that failed and why.
   */
  private async mountAll(config: AgentConfig): Promise<string[]> {
    const mounted: string[] = [];
    const failures: MountOutcome[] = [];
    for (const m of config.mounts) {
      const listed = readMountList(this.opts.runDir);
      if (listed.includes(m.path)) continue;
      const outcome = await mountShare(this.opts.systemPath, m, path.join(this.opts.runDir, 'files'));
      if (outcome.fs) {
        writeMountList(this.opts.runDir, [...listed, m.path]);
        mounted.push(m.path);
        log(`control: mounted ${m.path} (${outcome.fs})`);
      } else {
        failures.push(outcome);
        log(`control: mount FAILED ${m.path}: ${outcome.reason}`);
      }
    }
    writeMountFailures(this.opts.runDir, failures);
    if (failures.length > 0) {
      const list = failures.map((f) => `${f.path} (${f.reason})`).join('; ');
      throw new StepError('mounts', `cannot mount ${list}; check that the sandbox's share device has that tag and the host folder exists`, { mounted });
    }
    return mounted;
  }

  /** Mounts the given paths again with their config entries (after a suspend that could not finish). */
  private async remount(paths: string[]): Promise<string[]> {
    if (paths.length === 0) return [];
    let config: AgentConfig;
    try {
      config = loadConfig(this.opts.configPath);
    } catch (err) {
      log(`control: cannot mount again, the config is unreadable: ${errorText(err)}`);
      return [];
    }
    const back: string[] = [];
    for (const where of paths) {
      const m = config.mounts.find((x) => x.path === where);
      if (!m) continue;
      const outcome = await mountShare(this.opts.systemPath, m, path.join(this.opts.runDir, 'files'));
      if (outcome.fs) back.push(where);
      else log(`control: cannot mount ${where} again: ${outcome.reason}`);
    }
    return back;
  }

  private async sync(): Promise<void> {
    const r = await runCommand(this.opts.systemPath, 'sync', []);
    if (r.code !== 0) throw new StepError('sync', `sync failed: ${r.stderr || `exit ${r.code}`}; the guest's disk may be failing, see the console log`);
  }

  private answer(channel: ServerChannel, id: string, answer: ControlAnswer): void {
    if (!answer.ok) log(`${id}: control answered error${answer.step ? ` (${answer.step})` : ''}`);
    try {
      if (!channel.writable) {
        log(`${id}: the client left before the answer`);
        return;
      }
      channel.write(`${JSON.stringify(answer)}\n`);
      channel.exit(answer.ok ? 0 : 1);
      channel.end();
    } catch (err) {
      log(`${id}: cannot answer: ${errorText(err)}`);
    }
  }
}

/** Writes a file readable by root only, atomically (the config holds the private host key). */
function writePrivate(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

