#!/bin/sh
# make demo: one streamed exchange, against $OPENAI_BASE_URL when set, else
# against the bundled local server (started and stopped by the example).
set -eu
cd "$(dirname "$0")/.."
# the checkout's lua/ on the path is all it takes: oai finds the core that
# `make` built in build/5.4/ by itself
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  exec lua5.4 examples/chat.lua "$@"
fi
exec lua5.4 examples/chat.lua --once "${DEMO_PROMPT:-Explain in one sentence why streaming matters.}"
