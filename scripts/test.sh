#!/usr/bin/env bash
# The test pass: `npm test` (everything), `npm run test:unit`, `npm run test:integration`,
# `npm run test:e2e` (the VS Code extension end to end).
# It sets the machine up first (scripts/setup.sh installs what is missing), so it runs on a fresh
# machine. Integration tests boot real VMs; they share state under .cove-test/ (COVE_TEST_HOME).
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:-all}"

bash scripts/setup.sh

unit=(out/test/unit/*.test.js)
integration=(out/test/integration/*.test.js)
status=0
run_tier() {
  local name="$1"; shift
  echo "=== $name tests ==="
  # One file at a time: integration files boot VMs and share one machine's two cores.
  node --test --test-concurrency=1 --test-reporter=spec "$@" || status=1
}
run_e2e() {
  # The extension in code-server + headless Chromium against a real sandbox (test/e2e/run.ts).
  echo "=== e2e tests ==="
  bash scripts/setup-e2e.sh && npm run --silent package && node out/test/e2e/run.js || status=1
}
case "$tier" in
  unit) run_tier unit "${unit[@]}" ;;
  integration) run_tier integration "${integration[@]}" ;;
  e2e) run_e2e ;;
  all) run_tier "unit and integration" "${unit[@]}" "${integration[@]}"; run_e2e ;;
  *) echo "usage: scripts/test.sh [unit|integration|e2e|all]" >&2; exit 2 ;;
esac
exit $status
