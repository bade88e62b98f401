# oai developer Makefile.  `make` builds oai/core.so for every Lua runtime
# found by pkg-config; `make test` runs the busted suite once per runtime.
#
#   make                 build/<rt>/oai/core.so for rt in 5.4 5.3 5.2 5.1 luajit
#   make test            busted on every runtime against its own build
#   make test RUNTIMES=5.4   one runtime only
#   make asan            suite with -fsanitize=address,undefined (gcc runtime preloaded)
#   make valgrind        suite under memcheck
#   make fuzz            libFuzzer targets (clang), FUZZ_SECONDS each
#   make bench           benchmarks in bench/
#   make demo            local server + examples/chat.lua

CC       ?= cc
PKG      ?= pkg-config
WARN      = -Wall -Wextra -pedantic -Wshadow -Wmissing-prototypes -Wstrict-prototypes
OPT      ?= -O2 -g
CFLAGS_OAI = -std=c99 $(OPT) $(WARN) -fPIC -fvisibility=hidden $(EXTRA_CFLAGS)
CURL_CFLAGS := $(shell $(PKG) --cflags libcurl 2>/dev/null)
CURL_LIBS   := $(shell $(PKG) --libs libcurl 2>/dev/null || echo -lcurl) -lm
LDFLAGS_OAI = -shared $(EXTRA_LDFLAGS)

# runtime name -> pkg-config package and interpreter
pc_5.4 = lua5.4
pc_5.3 = lua5.3
pc_5.2 = lua5.2
pc_5.1 = lua5.1
# LuaJIT's C API is Lua 5.1's: without LuaJIT's headers, 5.1's build the
# core Neovim and LOVE load
pc_luajit = $(if $(shell $(PKG) --exists luajit && echo y),luajit,lua5.1)
lua_5.4 = lua5.4
lua_5.3 = lua5.3
lua_5.2 = lua5.2
lua_5.1 = lua5.1
lua_luajit = luajit

ALL_RUNTIMES = 5.4 5.3 5.2 5.1 luajit
# built: every runtime whose headers pkg-config finds (luajit also for
# Neovim, which brings its own interpreter); tested: those with an interpreter
BUILDABLE := $(foreach r,$(ALL_RUNTIMES),$(if $(shell $(PKG) --exists $(pc_$(r)) && echo y),$(r)))
RUNTIMES ?= $(foreach r,$(BUILDABLE),$(if $(shell command -v $(lua_$(r))),$(r)))
BUILD_RUNTIMES = $(if $(filter command line,$(origin RUNTIMES)),$(RUNTIMES),$(BUILDABLE))
BUILD    ?= build

SRC ?= $(wildcard src/*.c)
HDR  = $(wildcard src/*.h)

.PHONY: all check-deps test asan valgrind fuzz bench demo clean install check-warnings

all: check-deps $(foreach r,$(BUILD_RUNTIMES),$(BUILD)/$(r)/oai/core.so)

check-deps:
	@$(PKG) --exists libcurl || test -f /usr/include/curl/curl.h || test -f /usr/include/$$($(CC) -print-multiarch 2>/dev/null)/curl/curl.h || \
	  { echo "oai: libcurl's headers are missing: install libcurl4-openssl-dev (Debian/Ubuntu) or run ./.ci/install-deps" >&2; exit 1; }
	@test -n "$(BUILD_RUNTIMES)" || \
	  { echo "oai: no Lua headers found by pkg-config (lua5.1..lua5.4, luajit): install liblua5.4-dev or libluajit2-5.1-dev, or run ./.ci/install-deps" >&2; exit 1; }

# one pattern per runtime; objects are not shared because headers differ
define runtime_rule
$(BUILD)/$(1)/oai/core.so: $(SRC) $(HDR) Makefile
	@mkdir -p $$(@D)
	$(CC) $(CFLAGS_OAI) $$(shell $(PKG) --cflags $(pc_$(1))) $(CURL_CFLAGS) -o $$@ $(SRC) $(LDFLAGS_OAI) $(CURL_LIBS)
endef
$(foreach r,$(ALL_RUNTIMES),$(eval $(call runtime_rule,$(r))))

BUSTED ?= busted
BUSTED_ARGS ?=

test: all
	@set -e; for r in $(RUNTIMES); do \
	  echo "== busted on $$r"; \
	  OAI_BUILD=$(BUILD)/$$r $(BUSTED) --lua=$$(case $$r in luajit) echo luajit;; *) echo lua$$r;; esac) \
	    --cpath="$(BUILD)/$$r/?.so" $(BUSTED_ARGS); \
	done

# Sanitizers: the interpreters are not instrumented, so the runtime is preloaded.
ASAN_LIBS = $(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)
# Programs the specs start (nginx with oai.ngx, the chat CLI) use the plain
# build: they do not run under the sanitizer, and core.so unsets LD_PRELOAD
# for them (OAI_SANITIZE_UNSET_PRELOAD).  Specs tagged #child test only such
# a program (the CLI, Neovim, LOVE), so the sanitizer and valgrind runs
# leave them out.
CHECK_ARGS ?= --exclude-tags=child
asan: all
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -DOAI_SANITIZE_UNSET_PRELOAD" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" all
	@set -e; for r in $(RUNTIMES); do \
	  echo "== asan busted on $$r"; \
	  LD_PRELOAD="$(ASAN_LIBS)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  OAI_NGX_CPATH="$(CURDIR)/$(BUILD)/luajit" OAI_CHILD_BUILD="$(BUILD)/$$r" \
	  OAI_BUILD=build-asan/$$r $(BUSTED) --lua=$$(case $$r in luajit) echo luajit;; *) echo lua$$r;; esac) \
	    --cpath="build-asan/$$r/?.so" $(CHECK_ARGS) $(BUSTED_ARGS); \
	done

VALGRIND = valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes --quiet
valgrind: all
	@set -e; for r in $(filter-out luajit,$(RUNTIMES)); do \
	  echo "== valgrind busted on $$r"; \
	  OAI_BUILD=$(BUILD)/$$r OAI_VALGRIND=1 $(VALGRIND) lua$$r /usr/bin/busted --cpath="$(BUILD)/$$r/?.so" $(CHECK_ARGS) $(BUSTED_ARGS); \
	done

FUZZ_SECONDS ?= 60
FUZZ_CFLAGS = -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined $(WARN) -Isrc
LUA54_CFLAGS := $(shell $(PKG) --cflags lua5.4 2>/dev/null)
LUA54_LIBS := $(shell $(PKG) --libs lua5.4 2>/dev/null)
# target -> the sources it links (the SSE parser needs no Lua at all)
fuzz_src_fuzz_sse = src/sse.c
fuzz_lua_fuzz_sse =
fuzz_src_fuzz_json_decode = src/json_encode.c src/json_decode.c
fuzz_lua_fuzz_json_decode = yes
fuzz_src_fuzz_json_encode = src/json_encode.c src/json_decode.c
fuzz_lua_fuzz_json_encode = yes
fuzz_src_fuzz_chunk = src/chunk.c src/scan.c src/text.c src/records.c src/sse.c src/json_encode.c src/json_decode.c
fuzz_lua_fuzz_chunk = yes
FUZZ_TARGETS ?= fuzz_sse fuzz_json_decode fuzz_json_encode fuzz_chunk

# FUZZ_JOBS targets run at once (one per core by default), each for
# FUZZ_SECONDS; a target that finds a crash fails the run and its log says
# which input (libFuzzer writes it as crash-* in the current directory).
FUZZ_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
fuzz: $(addprefix build/fuzz/,$(FUZZ_TARGETS))
	@printf '%s\n' $(FUZZ_TARGETS) | xargs -P $(FUZZ_JOBS) -I{} sh -c '\
	  mkdir -p build/fuzz/corpus-{}; \
	  if build/fuzz/{} -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build/fuzz/corpus-{} \
	       $$(test -d fuzz/seeds/{} && echo fuzz/seeds/{}) > build/fuzz/{}.log 2>&1; \
	  then echo "== fuzz {} ($(FUZZ_SECONDS)s): clean, $$(grep -o "number_of_executed_units: *[0-9]*" build/fuzz/{}.log | grep -o "[0-9]*$$") runs"; \
	  else echo "== fuzz {}: FAILED"; tail -40 build/fuzz/{}.log; exit 255; fi'


build/fuzz/%: fuzz/%.c fuzz/fuzz_lua.h $(SRC) $(HDR)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) $(if $(fuzz_lua_$*),$(LUA54_CFLAGS)) -o $@ $< $(fuzz_src_$*) $(if $(fuzz_lua_$*),$(LUA54_LIBS))

bench: all
	@sh bench/run.sh

demo: check-deps $(BUILD)/5.4/oai/core.so
	@sh examples/demo.sh

clean:
	rm -rf build build-asan

PREFIX ?= /usr/local
LUA_VERSION ?= 5.4
LUA ?=
INST_RT = $(if $(filter luajit,$(LUA)),luajit,$(LUA_VERSION))
INST_LVER = $(if $(filter luajit,$(LUA)),5.1,$(LUA_VERSION))
install: $(BUILD)/$(INST_RT)/oai/core.so
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(INST_LVER)/oai $(DESTDIR)$(PREFIX)/share/lua/$(INST_LVER)/oai/testing $(DESTDIR)$(PREFIX)/share/lua/$(INST_LVER)/oai/ngx
	install -m 0755 $(BUILD)/$(INST_RT)/oai/core.so $(DESTDIR)$(PREFIX)/lib/lua/$(INST_LVER)/oai/core.so
	install -m 0644 lua/oai/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(INST_LVER)/oai/
	install -m 0644 lua/oai/testing/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(INST_LVER)/oai/testing/
	install -m 0644 lua/oai/ngx/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(INST_LVER)/oai/ngx/
