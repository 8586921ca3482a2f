#!/usr/bin/env bash
# The test suite: builds in Release and runs every default test (slow checks live in the benchmark harness).
# Needs the shared data at ../shared (or $SQUEEZE_SHARED), and for one test (trait Category=Network) the npm registry
# that npm's configuration names (registry.npmjs.org by default). Ends with a line "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")"
# The comparison page of `squeeze serve` is tested in Debian's chromium; where it is missing and Debian's packages can be
# installed (as root), install it (about a minute); elsewhere that one test is skipped and counted as skipped.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "installing Debian's chromium for the browser test" >&2
  timeout 600 sh -c 'apt-get install -y -q chromium > /dev/null 2>&1 || { apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium > /dev/null 2>&1; }' \
    || echo "chromium could not be installed: the browser test will be skipped" >&2
fi
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
