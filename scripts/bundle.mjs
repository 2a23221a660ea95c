// Bundles the parts that run outside this repo's node_modules: the guest agent (copied into the
// image), and later the extension and the coved it ships. The CLI and coved run from tsc's out/.
import * as esbuild from 'esbuild';

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

await esbuild.build({ ...common, entryPoints: ['agent/main.ts'], outfile: 'out/bundle/agent.js' });
