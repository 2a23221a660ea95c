// Builds what the extension ships, into extension/dist/:
//   extension.js — the extension (esbuild, `vscode` left external);
//   coved.js     — coved itself, so the VSIX starts its own when none is running;
//   media/       — the repository's media/ (icons, walkthrough images), which package.json names as
//     dist/media/…;
//   tier-docker/, kernel/features.json, out/bundle/agent.js — the image recipe coved's image build
//     reads. vmm-host/image finds the recipe by walking up from coved's own folder, so with these
//     beside dist/coved.js the bundled coved builds the same image (same hash) as the repository's.
// And, for the end-to-end tests, out/e2e/suite/index.js (the mocha suite run in the extension host).
// Run from anywhere: `node extension/scripts/bundle.mjs` (root `npm run build:extension`).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ext = path.join(root, 'extension');
const dist = path.join(ext, 'dist');

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: false,
  logLevel: 'warning',
  // ssh2 and cpu-features try optional native bindings inside try/catch; the pure-JS paths are used.
  external: ['*.node', 'cpu-features'],
};

// coved reads its version from the repository's package.json by a path relative to out/: point
// esbuild at the same file from the source tree.
const rootPackageJson = {
  name: 'root-package-json',
  setup(build) {
    build.onResolve({ filter: /(^|\/)package\.json$/ }, (args) =>
      args.importer.includes(`${path.sep}vmm-host${path.sep}`) ? { path: path.join(root, 'package.json') } : undefined,
    );
  },
};

// Modules that are also CLIs run their main when `require.main === module`, which is true for every
// module inside a bundle: in coved's bundle those guards must be false.
const noCliMains = {
  name: 'no-cli-mains',
  setup(build) {
    build.onLoad({ filter: /[\\/](kernel|tier-docker)[\\/].*\.ts$/ }, async (args) => ({
      contents: (await fs.promises.readFile(args.path, 'utf8')).replace(/require\.main === module/g, 'false'),
      loader: 'ts',
    }));
  },
};

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist, { recursive: true });

// The agent bundle the image embeds: built by the repository's own bundle script, byte for byte.
execFileSync(process.execPath, [path.join(root, 'scripts', 'bundle.mjs')], { cwd: root, stdio: 'inherit' });

await Promise.all([
  esbuild.build({ ...common, entryPoints: [path.join(ext, 'src', 'extension.ts')], outfile: path.join(dist, 'extension.js'), external: [...common.external, 'vscode'] }),
  esbuild.build({ ...common, entryPoints: [path.join(root, 'vmm-host', 'coved', 'main.ts')], outfile: path.join(dist, 'coved.js'), plugins: [rootPackageJson, noCliMains] }),
  esbuild.build({
    ...common,
    entryPoints: ['index.ts', 'sandbox.test.ts', 'docker-sidebar.test.ts'].map((f) => path.join(root, 'test', 'e2e', 'suite', f)),
    outdir: path.join(root, 'out', 'e2e', 'suite'),
    external: [...common.external, 'vscode', 'mocha'],
  }),
]);

// Modes are part of the image hash: copy them (cpSync keeps them) and symlinks as they are.
const copy = (from, to) => fs.cpSync(path.join(root, from), path.join(dist, to), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
copy('tier-docker/recipe.json', 'tier-docker/recipe.json');
copy('tier-docker/rootfs', 'tier-docker/rootfs');
copy('tier-docker/initramfs', 'tier-docker/initramfs');
copy('kernel/features.json', 'kernel/features.json');
copy('out/bundle/agent.js', 'out/bundle/agent.js');
copy('media', 'media');

const size = (f) => `${(fs.statSync(path.join(dist, f)).size / 1024).toFixed(0)} KiB`;
console.log(`extension bundle: dist/extension.js ${size('extension.js')}, dist/coved.js ${size('coved.js')}, recipe and agent copied`);
