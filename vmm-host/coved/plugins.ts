// The host docker CLI's compose and buildx plugins. Where the docker CLI finds none, `cove up` (and
// the extension's Open in Sandbox) installs the image's own, which match the engine in the guest,
// into the user's plugin folder ($DOCKER_CONFIG/cli-plugins, default ~/.docker/cli-plugins). A
// plugin the user has is never replaced; Cove's copies carry a marker file so that `cove doctor`
// can say which plugin came from where, and a newer image can update its own copy.
import * as child_process from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IMAGE } from '../../contract/layout';
import type { CliPluginInfo, PluginsResult } from '../../contract/protocol';
import { readManifest } from '../image';

const PLUGINS = ['compose', 'buildx'] as const;
type PluginName = (typeof PLUGINS)[number];

/** The folder Cove installs into: the first folder the docker CLI searches. */
export function userPluginDir(env: NodeJS.ProcessEnv = process.env): string {
  const config = env.DOCKER_CONFIG && env.DOCKER_CONFIG !== '' ? env.DOCKER_CONFIG : path.join(os.homedir(), '.docker');
  return path.join(config, 'cli-plugins');
}

/** The folders the docker CLI (Linux) searches for plugins, in its order. */
function searchDirs(env: NodeJS.ProcessEnv): string[] {
  return [userPluginDir(env), '/usr/local/lib/docker/cli-plugins', '/usr/local/libexec/docker/cli-plugins', '/usr/lib/docker/cli-plugins', '/usr/libexec/docker/cli-plugins'];
}

const markerOf = (file: string) => path.join(path.dirname(file), `.${path.basename(file)}.cove.json`);

interface Marker {
  image: string;
  version: string | null;
  size: number;
}

function readMarker(file: string): Marker | null {
  try {
    const m = JSON.parse(fs.readFileSync(markerOf(file), 'utf8')) as Marker;
    // A marker only counts while the file is still the one Cove wrote (same size).
    return fs.statSync(file).size === m.size ? m : null;
  } catch {
    return null;
  }
}

/** Runs `docker <plugin> version`: the plugin's first line, or null when the docker CLI lacks it. */
function pluginVersion(dockerBin: string, plugin: PluginName, env: NodeJS.ProcessEnv): Promise<string | null> {
  return new Promise((resolve) =>
    child_process.execFile(dockerBin, [plugin, 'version'], { timeout: 15_000, env }, (err, stdout) => resolve(err ? null : (stdout.trim().split('\n')[0] ?? ''))),
  );
}

function findPlugin(plugin: PluginName, env: NodeJS.ProcessEnv): string | null {
  for (const d of searchDirs(env)) {
    const f = path.join(d, `docker-${plugin}`);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch {
      // Not here.
    }
  }
  return null;
}

async function describe(dockerBin: string, plugin: PluginName, env: NodeJS.ProcessEnv): Promise<CliPluginInfo> {
  const works = await pluginVersion(dockerBin, plugin, env);
  const file = findPlugin(plugin, env);
  const marker = file ? readMarker(file) : null;
  if (works === null) {
    return { name: plugin, source: 'missing', path: file, ...(file ? { note: `${file} is there but \`docker ${plugin} version\` fails` } : {}) };
  }
  return { name: plugin, source: marker ? 'cove' : 'user', path: file, version: marker?.version ?? works };
}

/**
 * Reports the plugins, and unless `check`, installs the image's copy of each one the docker CLI
 * lacks (or an older copy of Cove's own). Never touches a file Cove did not write.
 */
export async function ensurePlugins(opts: { dockerBin: string; imageDir: string | null; check: boolean; env?: NodeJS.ProcessEnv }): Promise<PluginsResult> {
  const env = opts.env ?? process.env;
  const dir = userPluginDir(env);
  const installed: string[] = [];
  const plugins: CliPluginInfo[] = [];
  const manifest = opts.imageDir ? readManifest(opts.imageDir) : null;
  for (const plugin of PLUGINS) {
    let info = await describe(opts.dockerBin, plugin, env);
    const source = opts.imageDir ? path.join(opts.imageDir, IMAGE.cliPlugins, `docker-${plugin}`) : null;
    const imageVersion = (manifest?.versions as Record<string, string | null> | undefined)?.[plugin] ?? null;
    const ours = info.path ? readMarker(info.path) : null;
    const outdated = info.source === 'cove' && ours !== null && ours.version !== imageVersion && info.path === path.join(dir, `docker-${plugin}`);
    if (!opts.check && (info.source === 'missing' || outdated)) {
      const target = path.join(dir, `docker-${plugin}`);
      if (!source || !fs.existsSync(source)) {
        info = { ...info, note: 'the image has no copy of it (an image from before Cove shipped plugins): run `cove image build`' };
      } else if (fs.existsSync(target) && !readMarker(target)) {
        info = { ...info, note: `${target} exists and is not Cove's: left as it is` };
      } else {
        installCopy(source, target, { image: path.basename(opts.imageDir ?? ''), version: imageVersion, size: fs.statSync(source).size });
        const after = await describe(opts.dockerBin, plugin, env);
        if (after.source === 'missing') {
          // It does not run on this host (an older glibc, say): take it back out.
          fs.rmSync(target, { force: true });
          fs.rmSync(markerOf(target), { force: true });
          info = { ...after, path: null, note: `the image's docker-${plugin} does not run on this host; install the ${plugin} plugin from your distribution` };
        } else {
          info = { ...after, source: 'cove', version: imageVersion ?? after.version };
          installed.push(plugin);
        }
      }
    }
    plugins.push(info);
  }
  return { plugins, installed, dir };
}

/** Copies to a temp name in the target folder, then renames: the docker CLI never sees half a file. */
function installCopy(source: string, target: string, marker: Marker): void {
  fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
  const tmp = `${target}.cove-tmp-${process.pid}`;
  try {
    fs.copyFileSync(source, tmp);
    fs.chmodSync(tmp, 0o755);
    fs.writeFileSync(markerOf(target), JSON.stringify(marker) + '\n');
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
