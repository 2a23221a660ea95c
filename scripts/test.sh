#!/usr/bin/env bash
# The test pass: `npm test` (everything), `npm run test:unit`, `npm run test:integration`,
# `bash scripts/test.sh security` (the hostile-guest tier), `npm run test:e2e` (the VS Code
# extension end to end).
# It sets the machine up first (scripts/setup.sh installs what is missing), so it runs on a fresh
# machine. Integration tests boot real VMs; they share state under .cove-test/ (COVE_TEST_HOME).
# `scripts/test.sh summary LOG` prints only the closing line for a saved test log (the unit tests
# check it).
set -euo pipefail
cd "$(dirname "$0")/.."
tier="${1:-all}"

[ "$tier" = summary ] || bash scripts/setup.sh

unit=(out/test/unit/*.test.js)
integration=(out/test/integration/*.test.js)
# The hostile-guest tier (docs/security.md): attacks from a guest on the host, partly on real VMs.
security=(out/test/security/*.test.js)
status=0
# Every runner's output is kept, so the last line can count all tiers together.
if [ "$tier" = summary ]; then
  log="${2:?usage: scripts/test.sh summary LOG}"
else
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
fi
run_tier() {
  local name="$1"; shift
  echo "=== $name tests ==="
  # One file at a time: integration files boot VMs and share one machine's two cores.
  node --test --test-concurrency=1 --test-reporter=spec "$@" 2>&1 | tee -a "$log" || status=1
}
run_e2e() {
  # The extension in code-server + headless Chromium against a real sandbox (test/e2e/run.ts).
  echo "=== e2e tests ==="
  { bash scripts/setup-e2e.sh && npm run --silent package && node out/test/e2e/run.js; } 2>&1 | tee -a "$log" || status=1
}
run_lint() {
  # The lint tier, first (`npm run lint`: both type-checks, eslint with zero warnings, no import
  # cycles). It counts as one test in the closing line, written in the e2e runner's format.
  echo "=== lint ==="
  if npm run --silent lint 2>&1 | tee -a "$log"; then
    echo "1 passed, 0 failed (lint)" | tee -a "$log"
  else
    echo "0 passed, 1 failed (lint)" | tee -a "$log"; status=1
  fi
}
summary() {
  # node's spec reporter ends with "ℹ pass N" / "ℹ fail N" / "ℹ skipped N"; the e2e runner with
  # "N passed, N failed[, N skipped]". All three counts reach the closing line.
  set +e +o pipefail
  local passed failed skipped e2e
  passed=$(grep -aoE '^ℹ pass [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
  failed=$(grep -aoE '^ℹ fail [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
  skipped=$(grep -aoE '^ℹ skipped [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
  e2e=$(grep -aoE '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?' "$log")
  passed=$((passed + $(echo "$e2e" | awk '{s+=$1} END {print s+0}')))
  failed=$((failed + $(echo "$e2e" | awk '{s+=$3} END {print s+0}')))
  skipped=$((skipped + $(echo "$e2e" | awk '{s+=$5} END {print s+0}')))
  [ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
  echo "tests: $passed passed, $failed failed, $skipped skipped"
}
case "$tier" in
  lint) run_lint ;;
  unit) run_tier unit "${unit[@]}" ;;
  integration) run_tier integration "${integration[@]}" ;;
  security) run_tier security "${security[@]}" ;;
  e2e) run_e2e ;;
  summary) ;;
  all) run_lint; run_tier "unit and integration" "${unit[@]}" "${integration[@]}"; run_tier security "${security[@]}"; run_e2e ;;
  *) echo "usage: scripts/test.sh [lint|unit|integration|security|e2e|all|summary LOG]" >&2; exit 2 ;;
esac
summary
exit $status
