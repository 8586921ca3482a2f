#!/usr/bin/env bash
# The test suite: builds in Release and runs every default test (slow checks live in the benchmark harness).
# Needs the shared data at ../shared (or $SQUEEZE_SHARED), and for one test (trait Category=Network) the npm registry
# that npm's configuration names (registry.npmjs.org by default). Ends with a line "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")"
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
status=0
dotnet test Squeeze.slnx -c Release --logger "trx;LogFileName=results.trx" --results-directory "$results" "$@" || status=$?
trx="$(find "$results" -name '*.trx' | head -n 1)"
if [ -n "$trx" ]; then
  counters="$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)"
  get() { printf '%s' "$counters" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*'; }
  passed="$(get passed)"; failed="$(get failed)"; total="$(get total)"; executed="$(get executed)"
  echo "tests: ${passed:-0} passed, ${failed:-0} failed, $(( ${total:-0} - ${executed:-0} )) skipped"
fi
exit $status
