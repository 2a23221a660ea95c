// Row 4: the shared workspace (virtio-fs and 9p) against the guest's own disk, in the same sandbox
// and the same run: 256 MiB sequential write and read, create / stat / read / delete of 2,000
// small files, and `git status` on a 5,000-file tree. Everything is timed in the guest
// (bench/guest/fs.sh); git is the host's binary copied in (the image has no git).
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cove, guestSh, log, makeRow, ok, type Row } from './lib';
import type { Suite } from './suite';

const FILES = 2000;
const SEQ_MIB = 256;

/** A 5,000-file tree committed with the host's git at WS/tree, and WS/.bench/tree.tar of it. */
function makeGitTree(ws: string): void {
  const tree = path.join(ws, 'tree');
  fs.rmSync(tree, { recursive: true, force: true });
  for (let d = 0; d < 50; d++) {
    const dir = path.join(tree, `pkg${d}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 100; f++) fs.writeFileSync(path.join(dir, `mod${f}.ts`), `export const v${d}_${f} = ${d * 100 + f};\n`);
  }
  const git = (...a: string[]) => child_process.execFileSync('git', ['-c', 'user.name=cove-bench', '-c', 'user.email=bench@cove.invalid', '-c', 'init.defaultBranch=main', ...a], { cwd: tree, stdio: 'pipe' });
  git('init', '-q');
  git('add', '-A');
  git('commit', '-qm', 'bench tree');
  child_process.execFileSync('tar', ['-C', ws, '-cf', path.join(ws, '.bench', 'tree.tar'), 'tree']);
}

async function installGit(name: string): Promise<void> {
  const have = await cove(['exec', name, '--', 'sh', '-c', 'command -v git'], 60_000);
  if (have.code === 0) return;
  ok(await cove(['cp', '/usr/bin/git', `${name}:/usr/local/bin/git`], 180_000), 'cove cp git into the guest');
  ok(await cove(['exec', name, '--', 'sh', '-c', 'chmod 755 /usr/local/bin/git && git --version'], 60_000), 'git --version in the guest');
}

/** The data-path issue's goal for creates and deletes on the virtio-fs share. */
const halfOfDisk = (r: { ratio?: number | null }) => ({ text: '≥ 50 % of the guest disk', met: (r.ratio ?? 0) >= 0.5 });

const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];

export async function workspaceRows(suite: Suite, name: string, mount: 'virtiofs' | '9p'): Promise<void> {
  const ids = ['seqwrite', 'seqread', 'create', 'stat', 'read', 'delete', 'git'].map((k) => `fs.${mount}.${k}`);
  if (!ids.some((id) => suite.want(id))) return;
  const ws = suite.workspacePath(name);
  if (!fs.existsSync(path.join(ws, '.bench'))) throw new Error(`${ws}/.bench is missing`);
  makeGitTree(ws);
  await installGit(name);
  const n = suite.samples(1);
  const gitRuns = suite.samples(3);
  const share: Array<Record<string, number>> = [];
  const disk: Array<Record<string, number>> = [];
  const script = path.join(ws, '.bench', 'fs.sh');
  for (let i = 0; i < n; i++) {
    log(`fs ${mount} ${i + 1}/${n}: the share`);
    share.push(await guestSh(name, `bash ${script} ${ws} ${path.join(ws, 'tree')} ${gitRuns}`, 20 * 60_000, `fs.sh on the ${mount} share`));
    log(`fs ${mount} ${i + 1}/${n}: the guest disk`);
    disk.push(await guestSh(name, `bash ${script} /var/tmp ${path.join(ws, '.bench', 'tree.tar')} ${gitRuns}`, 20 * 60_000, 'fs.sh on the guest disk'));
  }
  const seconds = (o: Array<Record<string, number>>, k: string) => o.map((x) => x[k] / 1e6);
  const rate = (o: Array<Record<string, number>>, k: string, amount: number) => seconds(o, k).map((s) => amount / s);
  const gitMs = (o: Array<Record<string, number>>) => o.flatMap((x) => Object.keys(x).filter((k) => /^git\d+$/.test(k)).map((k) => x[k] / 1000));
  const base = { better: 'higher' as const, baselineWhat: "the guest's own disk (ext4 on the qcow2), same sandbox" };
  const rows: Row[] = [
    makeRow({ ...base, id: `fs.${mount}.seqwrite`, what: `${mount}: sequential write ${SEQ_MIB} MiB (dd, fsync)`, unit: 'MiB/s', figure: rate(share, 'seqwrite', SEQ_MIB), baseline: rate(disk, 'seqwrite', SEQ_MIB) }),
    makeRow({
      ...base,
      id: `fs.${mount}.seqread`,
      what: `${mount}: sequential read ${SEQ_MIB} MiB (guest cache dropped)`,
      unit: 'MiB/s',
      figure: rate(share, 'seqread', SEQ_MIB),
      baseline: rate(disk, 'seqread', SEQ_MIB),
      goal: mount === 'virtiofs' ? (r) => ({ text: '≥ 60 % of the guest disk', met: (r.ratio ?? 0) >= 0.6 }) : undefined,
    }),
    makeRow({
      ...base,
      id: `fs.${mount}.create`,
      what: `${mount}: create ${FILES} small files`,
      unit: 'files/s',
      figure: rate(share, 'create', FILES),
      baseline: rate(disk, 'create', FILES),
      goal: mount === 'virtiofs' ? halfOfDisk : undefined,
    }),
    makeRow({ ...base, id: `fs.${mount}.stat`, what: `${mount}: stat ${FILES} small files (ls -l)`, unit: 'files/s', figure: rate(share, 'stat', FILES), baseline: rate(disk, 'stat', FILES) }),
    makeRow({ ...base, id: `fs.${mount}.read`, what: `${mount}: read ${FILES} small files`, unit: 'files/s', figure: rate(share, 'read', FILES), baseline: rate(disk, 'read', FILES) }),
    makeRow({ ...base, id: `fs.${mount}.delete`, what: `${mount}: delete ${FILES} small files`, unit: 'files/s', figure: rate(share, 'delete', FILES), baseline: rate(disk, 'delete', FILES), goal: mount === 'virtiofs' ? halfOfDisk : undefined }),
    makeRow({
      ...base,
      better: 'lower',
      id: `fs.${mount}.git`,
      what: `${mount}: \`git status\` on a 5,000-file tree (warm)`,
      unit: 'ms',
      figure: gitMs(share),
      baseline: gitMs(disk),
      goal: mount === 'virtiofs' ? (r) => ({ text: '≤ 1.5× the guest disk', met: (r.ratio ?? Infinity) <= 1.5 }) : undefined,
    }),
  ];
  for (const r of rows) if (suite.want(r.id)) suite.add(r);
  suite.profile[`fs.${mount}`] = { share, disk, medianCreateShareS: median(seconds(share, 'create')), medianCreateDiskS: median(seconds(disk, 'create')) };
}

export async function workspaceGroup(suite: Suite): Promise<void> {
  const main = suite.mountType;
  if (['seqwrite', 'seqread', 'create', 'stat', 'read', 'delete', 'git'].some((k) => suite.want(`fs.${main}.${k}`))) {
    await workspaceRows(suite, await suite.main(), main);
  }
}

/** The 9p rows need their own sandbox (the mount type is chosen at create); removed after. */
export async function workspace9pGroup(suite: Suite): Promise<void> {
  if (suite.mountType === '9p') return; // the main sandbox is already 9p
  if (!['seqwrite', 'seqread', 'create', 'stat', 'read', 'delete', 'git'].some((k) => suite.want(`fs.9p.${k}`))) return;
  const name = 'b9';
  await cove(['rm', '--force', name], 180_000);
  log('booting sandbox b9 (9p)');
  const ms = await suite.up(name, suite.workspace(name), '9p');
  suite.profile['boot.9p'] = { ms };
  try {
    await workspaceRows(suite, name, '9p');
  } finally {
    await suite.rm(name);
  }
}
