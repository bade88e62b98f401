#!/bin/sh
# make bench: build the measuring helper and the C floor, install the official
# openai npm package into bench/ (once), then run bench/run.lua.
# Options are environment variables; see bench/README.md.
set -eu
cd "$(dirname "$0")/.."
OUT=${BENCH_OUT:-build/bench}
mkdir -p "$OUT"
CC=${CC:-cc}
$CC -std=c99 -O2 -Wall -Wextra -o "$OUT/measure" bench/measure.c
$CC -std=c99 -O2 -Wall -Wextra $(pkg-config --cflags libcurl 2>/dev/null) -o "$OUT/floor" \
  bench/peers/floor.c $(pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  if [ ! -f bench/node_modules/openai/package.json ]; then
    echo "bench: npm install --prefix bench (the openai package, into bench/node_modules)" >&2
    npm install --prefix bench --no-audit --no-fund --loglevel=error >&2
  fi
else
  echo "bench: node/npm not found: openai-node is skipped" >&2
fi
# 2,000 concurrent streams need more than the usual 1,024 descriptors
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec lua5.4 bench/run.lua "$@"
