#!/bin/sh
# make demo: one streamed exchange, against $OPENAI_BASE_URL when set, else
# against the bundled local server (started and stopped by the example).
set -eu
cd "$(dirname "$0")/.."
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"
export LUA_CPATH="build/5.4/?.so;;"
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  exec lua5.4 examples/chat.lua "$@"
fi
exec lua5.4 examples/chat.lua --once "${DEMO_PROMPT:-Explain in one sentence why streaming matters.}"
