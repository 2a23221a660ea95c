// The state one bench run shares between its groups: the options, the image and accel in use, the
// sandboxes it booted (and must remove), the bare-limit figures later rows compare against, and
// the rows collected so far.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildImage } from '../vmm-host/image';
import { QemuDriver, detectAccel, findVirtiofsd, type AccelResult } from '../vmm-host/driver';
import { BENCH_ROOT, GUEST_FILES, HOME, VM_CPUS, VM_MEMORY_MIB, alive, cove, docker, log, nowMs, ok, readPid, waitUntil, type Row } from './lib';

export interface Options {
  /** Multiplies every row's samples per run. */
  runs: number;
  only: string[];
  json: boolean;
}

export interface BareFigures {
  bootMs: number[];
  stopMs: number[];
  pssMiB: number[];
  guestReadyS: number[];
}

export class Suite {
  rows: Row[] = [];
  imageDir = '';
  accel: AccelResult | null = null;
  /** Sandboxes this run created, removed at the end whatever happens. */
  readonly sandboxes = new Set<string>();
  /** Bare-limit VM folders this run started. */
  readonly bareDirs = new Set<string>();
  readonly bare: BareFigures = { bootMs: [], stopMs: [], pssMiB: [], guestReadyS: [] };
  readonly started = new Date();
  /** Per-row notes the groups leave for the report (where the time goes). */
  readonly profile: Record<string, unknown> = {};

  constructor(readonly opts: Options) {}

  /** True when ROW (an id like `fs.virtiofs.seqread`) is selected by --only (prefix match). */
  want(id: string): boolean {
    if (this.opts.only.length === 0) return true;
    return this.opts.only.some((o) => id === o || id.startsWith(`${o}.`) || o.startsWith(`${id}.`));
  }

  add(row: Row): void {
    this.rows.push(row);
    const r = row.ratio === null ? '' : ` ratio ${row.ratio.toFixed(2)}`;
    log(`row ${row.id}: ${row.figure.median.toFixed(2)} ${row.unit} vs ${row.baseline?.median.toFixed(2) ?? '-'}${r}${row.goal ? ` (goal ${row.goal.met ? 'met' : 'missed'})` : ''}`);
  }

  samples(perRun: number): number {
    return Math.max(1, Math.round(this.opts.runs * perRun));
  }

  /** The mount coved will really use (virtio-fs needs virtiofsd and root here). */
  get mountType(): 'virtiofs' | '9p' {
    return findVirtiofsd() !== null && process.getuid?.() === 0 ? 'virtiofs' : '9p';
  }

  async prepare(): Promise<void> {
    fs.mkdirSync(HOME, { recursive: true, mode: 0o700 });
    // Share the tests' image, build cache and build lock when they exist: no second image build.
    const testHome = path.join(path.dirname(BENCH_ROOT), '.cove-test', 'home');
    for (const d of ['images', 'cache', 'locks']) {
      const mine = path.join(HOME, d);
      if (fs.existsSync(mine) || !fs.existsSync(testHome)) continue;
      fs.mkdirSync(path.join(testHome, d), { recursive: true });
      fs.symlinkSync(path.join(testHome, d), mine);
    }
    if (!fs.existsSync(path.join(HOME, 'accel.json')) && fs.existsSync(path.join(testHome, 'accel.json'))) {
      fs.copyFileSync(path.join(testHome, 'accel.json'), path.join(HOME, 'accel.json'));
    }
    log('building (or reusing) the guest image');
    const t0 = nowMs();
    const img = await buildImage({ home: HOME, onProgress: (step, _f, msg) => log(`image: ${step}: ${msg ?? ''}`) });
    this.imageDir = img.dir;
    log(`image ${path.basename(img.dir)} (${img.cached ? 'cached' : 'built'} in ${((nowMs() - t0) / 1000).toFixed(1)} s)`);
    this.accel = await detectAccel({ home: HOME, imageDir: this.imageDir, log: (m) => log(m) });
    log(`accel ${this.accel.accel} (${this.accel.reason}); VMs get ${VM_CPUS} vCPUs and ${VM_MEMORY_MIB} MiB`);
    // A coved left running for this home by an earlier run may have another environment (its
    // DOCKER_CONFIG decides where contexts go): stop it and start ours, before anything is timed,
    // so the boot rows measure a sandbox's boot, not coved's start.
    await this.stopCoved();
    ok(await cove(['ls'], 60_000), 'cove ls (starting coved)');
  }

  workspace(name: string): string {
    const dir = this.workspacePath(name);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(dir, '.bench'), { recursive: true });
    for (const f of fs.readdirSync(GUEST_FILES)) fs.copyFileSync(path.join(GUEST_FILES, f), path.join(dir, '.bench', f));
    return dir;
  }

  /** Per home: two runs with different homes at once (two people) must not share, remove and remake one folder. */
  workspacePath(name: string): string {
    return path.join(BENCH_ROOT, 'ws', path.basename(HOME), name);
  }

  /** `cove up` a sandbox and wait until `docker version` answers through its context; returns ms. */
  async up(name: string, ws: string, mount: 'virtiofs' | '9p'): Promise<number> {
    this.sandboxes.add(name);
    const t0 = nowMs();
    ok(await cove(['up', ws, '--name', name, '--cpus', `${VM_CPUS}`, '--memory', `${VM_MEMORY_MIB}M`, '--mount-type', mount], 20 * 60_000), `cove up ${name}`);
    await waitUntil(`docker version through the context cove-${name}`, 120_000, async () => (await docker(name, ['version', '--format', '{{.Server.Version}}'], 60_000)).code === 0, 100);
    return nowMs() - t0;
  }

  async rm(name: string): Promise<void> {
    ok(await cove(['rm', '--force', name], 180_000), `cove rm --force ${name}`);
    this.sandboxes.delete(name);
  }

  /** The main (virtio-fs where possible) sandbox most rows use; booted on first need. */
  async main(): Promise<string> {
    const name = 'bv';
    const st = await cove(['inspect', name, '--json'], 60_000);
    if (st.code === 0 && (JSON.parse(st.stdout) as { state: string }).state === 'running') return name;
    if (st.code === 0) await this.rm(name);
    log(`booting sandbox ${name} (${this.mountType})`);
    await this.up(name, this.workspace(name), this.mountType);
    return name;
  }

  /** Removes every sandbox and bare VM this run started and stops the bench's coved. */
  async cleanup(): Promise<void> {
    for (const name of [...this.sandboxes]) {
      await this.rm(name).catch((e: unknown) => log(`clean-up: ${(e as Error).message.split('\n')[0]}`));
    }
    for (const dir of [...this.bareDirs]) {
      await new QemuDriver(this.accel?.accel ?? 'tcg').stop(dir).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
      this.bareDirs.delete(dir);
    }
    await this.stopCoved();
  }

  async stopCoved(): Promise<void> {
    const pid = readPid(path.join(HOME, 'coved.pid'));
    if (pid && alive(pid)) {
      process.kill(pid, 'SIGTERM');
      await waitUntil('the bench coved to exit', 20_000, () => !alive(pid)).catch(() => process.kill(pid, 'SIGKILL'));
    }
  }
}
