// The lint tier (`npm run lint`, run first by scripts/test.sh): typescript-eslint's strict,
// type-checked rules with zero warnings allowed, the import boundaries between the processes, and
// no import cycles anywhere.
import eslint from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

// Patterns for no-restricted-imports, named after what they keep out. A pattern is matched against
// the import specifier as written, so each covers the relative forms (`../vmm-host/x`,
// `../../agent/y`).
const VSCODE = { group: ['vscode'], message: 'contract/ and agent/ run outside VS Code: define a small shape instead of importing vscode' };
const HOST = { group: ['**/vmm-host', '**/vmm-host/**'], message: 'import what is shared from contract/, not from vmm-host/' };
const AGENT = { group: ['**/agent', '**/agent/**'], message: 'import what is shared from contract/, not from agent/' };
const EXTENSION = { group: ['**/extension', '**/extension/**'], message: 'import what is shared from contract/, not from extension/' };

export default tseslint.config(
  {
    ignores: ['out/**', 'dist/**', 'node_modules/**', '.tools/**', '.cove-*/**', 'extension/dist/**', 'test/e2e/artifacts/**', 'tier-docker/rootfs/**', 'bench/guest/**', '**/*.js', '**/*.mjs'],
  },
  {
    files: ['**/*.ts'],
    extends: [eslint.configs.recommended, ...tseslint.configs.strictTypeChecked],
    plugins: { 'import-x': importX },
    languageOptions: {
      parserOptions: {
        // The extension and its end-to-end suite have their own tsconfig (vscode and mocha types).
        project: ['./tsconfig.json', './extension/tsconfig.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    settings: {
      'import-x/extensions': ['.ts'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: ['./tsconfig.json', './extension/tsconfig.json'], noWarnOnMultipleProjects: true })],
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // Messages interpolate counts, ports, pids and flags on purpose (`port ${port} is in use`).
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // The codebase returns void calls on purpose: concise callbacks (`(err) => (err ? reject(err) :
      // resolve())`) and early exits in protocol handlers (`if (!handle) return sftp.status(id, FAILURE)`).
      '@typescript-eslint/no-confusing-void-expression': 'off',
      // An async function without await is how the codebase implements a Promise-returning interface
      // or callback: a throw inside it becomes a rejection, which is what the callers handle.
      '@typescript-eslint/require-await': 'off',
      // node:test's test() and describe() return promises that the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }] },
      ],
    },
  },
  {
    // Tests and benchmarks assert a value exists and then use it (`assert.ok(pid); kill(pid!)`); a `!`
    // that turns out wrong fails the test, which is what a test is for. Their after() hooks guard
    // handles that a failed before() may have left unset (`client?.end()`), although the declared
    // types say they are always set.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unnecessary-condition': 'off',
    },
  },
  {
    files: ['contract/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [VSCODE, HOST, AGENT, EXTENSION] }] },
  },
  {
    files: ['agent/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [VSCODE, HOST, EXTENSION] }] },
  },
  {
    files: ['extension/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [HOST, AGENT] }] },
  },
);
