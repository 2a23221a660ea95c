// The extension-tests entry VS Code loads in the extension host (`extensionTestsPath`): runs the
// mocha suite and resolves or rejects, which becomes the extension host's exit code. The same entry
// serves @vscode/test-electron where a desktop VS Code can be downloaded (see test/e2e/electron.ts).
// Each result is also appended as one JSON line to $COVE_E2E_RESULTS, which the runner prints.
import * as fs from 'node:fs';
import * as path from 'node:path';
import Mocha from 'mocha';

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'bdd', timeout: 600_000, color: false, reporter: 'spec', bail: false });
  // In this order: the sidebar file opens the sandbox that sandbox.test.js stopped last.
  // COVE_E2E_ONLY=docker-sidebar (file names without .test.js, comma-separated) runs only those.
  const only = process.env.COVE_E2E_ONLY?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const f of ['sandbox', 'docker-sidebar']) if (!only?.length || only.includes(f)) mocha.addFile(path.join(__dirname, `${f}.test.js`));
  const results = process.env.COVE_E2E_RESULTS;
  const record = (o: object) => {
    if (results) fs.appendFileSync(results, JSON.stringify(o) + '\n');
  };
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => (failures > 0 ? reject(new Error(`${failures} end-to-end tests failed`)) : resolve()));
    runner.on('pass', (t) => record({ title: t.fullTitle(), state: 'passed', ms: t.duration }));
    runner.on('fail', (t, err: Error) => record({ title: t.fullTitle(), state: 'failed', ms: t.duration, error: err?.stack ?? String(err) }));
    runner.on('pending', (t) => record({ title: t.fullTitle(), state: 'skipped' }));
  });
}
