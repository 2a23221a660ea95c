// Makes a tiny Docker image tarball (`docker load` format) from the host's busybox-static, so tests
// need no registry and no network: one layer with /bin/busybox and a link for each applet.
import { createHash } from 'node:crypto';
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const BUSYBOX = '/bin/busybox';

export function makeBusyboxImage(outFile: string, tag = 'cove-test/busybox:latest'): string {
  if (!fs.existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} is missing: install busybox-static (scripts/setup.sh does)`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cove-img-'));
  try {
    const root = path.join(work, 'root');
    fs.mkdirSync(path.join(root, 'bin'), { recursive: true });
    for (const d of ['tmp', 'etc', 'www', 'data']) fs.mkdirSync(path.join(root, d));
    fs.copyFileSync(BUSYBOX, path.join(root, 'bin', 'busybox'));
    fs.chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    const applets = child_process.execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => /^[a-z0-9_.[-]+$/i.test(a) && a !== 'busybox');
    for (const a of applets) fs.symlinkSync('busybox', path.join(root, 'bin', a));
    fs.writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    fs.writeFileSync(path.join(root, 'www', 'index.html'), 'hello from cove\n');
    const layer = path.join(work, 'layer.tar');
    child_process.execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '--mtime=2020-01-01', '-C', root, '-cf', layer, '.']);
    const diffId = createHash('sha256').update(fs.readFileSync(layer)).digest('hex');
    const config = {
      architecture: 'amd64',
      os: 'linux',
      created: '2020-01-01T00:00:00Z',
      config: { Env: ['PATH=/bin'], Cmd: ['sh'], WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
      history: [{ created: '2020-01-01T00:00:00Z', created_by: 'cove test: busybox-static' }],
    };
    const configText = JSON.stringify(config);
    const configName = `${createHash('sha256').update(configText).digest('hex')}.json`;
    fs.writeFileSync(path.join(work, configName), configText);
    fs.mkdirSync(path.join(work, diffId));
    fs.renameSync(layer, path.join(work, diffId, 'layer.tar'));
    fs.writeFileSync(path.join(work, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: [`${diffId}/layer.tar`] }]));
    child_process.execFileSync('tar', ['-C', work, '-cf', outFile, 'manifest.json', configName, diffId]);
    return tag;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
