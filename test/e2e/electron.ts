// The same extension tests in a desktop VS Code through @vscode/test-electron, for machines that can
// download VS Code (this one cannot: see /work/shared/TESTING.md; `npm run test:e2e` uses
// code-server instead). It expects a booted-or-bootable Cove setup (scripts/setup.sh, scripts/setup-e2e.sh
// not needed) and the bundles of `npm run build:extension`:
//   node out/test/e2e/electron.js [workspace folder]
// COVE_HOME and DOCKER_CONFIG are isolated as in run.ts; the Docker-settings assertions need the
// settings stub (test/e2e/fixtures/docker-settings-stub) installed, or the Docker extension itself.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runTests } from '@vscode/test-electron';

const REPO = path.resolve(__dirname, '..', '..', '..');

async function main(): Promise<void> {
  const workspace = path.resolve(process.argv[2] ?? path.join(REPO, '.cove-test', 'e2e-ws', 'cove-e2e'));
  fs.mkdirSync(workspace, { recursive: true });
  if (!fs.existsSync(path.join(workspace, 'hello.txt'))) fs.writeFileSync(path.join(workspace, 'hello.txt'), 'hello from the e2e workspace\n');
  const code = await runTests({
    extensionDevelopmentPath: path.join(REPO, 'extension'),
    extensionTestsPath: path.join(REPO, 'out', 'e2e', 'suite', 'index.js'),
    launchArgs: [workspace, '--disable-workspace-trust', '--disable-extensions'],
    extensionTestsEnv: {
      COVE_HOME: process.env.COVE_HOME ?? path.join(REPO, '.cove-test', 'e2e-home'),
      DOCKER_CONFIG: process.env.DOCKER_CONFIG ?? path.join(REPO, '.cove-test', 'e2e-docker'),
      COVE_COVED: path.join(REPO, 'extension', 'dist', 'coved.js'),
    },
  });
  process.exit(code);
}

main().catch((e: unknown) => {
  process.stderr.write(`@vscode/test-electron: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
