# sasr: `make serve` and `make test` set everything up on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= test
SERVE_ARGS ?=

.PHONY: setup serve test test-cluster serve-cluster soak bench bench-step bench-stream bench-stream-peer bench-live-policy bench-deps bench-prefix bench-kernels bench-ingress system-deps clean

setup: $(VENV)/.installed

# A virtual environment in $(1) with torch first, matched to the machine, so the project's `torch>=`
# range is already met:
# - with an NVIDIA GPU: PyPI's default build (CUDA);
# - without: a CPU wheel, from a local wheel directory pip is pointed at (PIP_FIND_LINKS) if one
#   is there, else from PyTorch's CPU index (PyPI's default build would pull GBs of CUDA).
define venv_with_torch
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	@if $(1)/bin/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed"; \
	elif nvidia-smi -L >/dev/null 2>&1; then \
	  $(1)/bin/python -m pip install -q torch==$(TORCH_VERSION); \
	elif rm -rf $(1)/.torch && $(1)/bin/python -m pip download -q --no-index --no-deps -d $(1)/.torch torch==$(TORCH_VERSION) 2>/dev/null; then \
	  $(1)/bin/python -m pip install -q $(1)/.torch/torch-*.whl && rm -rf $(1)/.torch; \
	else \
	  $(1)/bin/python -m pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
endef

$(VENV)/.installed: pyproject.toml
	$(call venv_with_torch,$(VENV))
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

serve: setup
	$(BIN)/sasr serve --host $(HOST) --port $(PORT) $(SERVE_ARGS)

# Speech fixtures are made by espeak-ng and sox; real recordings come from alsa-utils; the web page is
# tested in Debian's chromium (driven by Playwright, which never downloads a browser here).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null || [ ! -f /usr/share/sounds/alsa/Front_Center.wav ] \
	    || ! command -v chromium >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends espeak-ng sox alsa-utils chromium; \
	fi

test: setup system-deps
	$(BIN)/python -m pytest -q -m "not cluster" $(PYTEST_ARGS)

# sasr on a real Ray Serve cluster: a head and two workers, each in its own network namespace, a client
# in a fourth (needs root; about 5 minutes): tests/test_cluster.py, and test_deploy.py with Ray installed
test-cluster: setup system-deps
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	$(BIN)/python -m pytest -q tests/test_cluster.py tests/test_deploy.py $(PYTEST_ARGS)

# Replicas on Ray Serve behind one address (port 8000 on every interface), from deploy/ray/serve.yaml: a one-node
# cluster here (`ray start` on more machines and `serve deploy` for more). HAProxy is the ingress.
serve-cluster: setup
	$(BIN)/python -m pip install -q -e '.[ray]'
	RAY_SERVE_ENABLE_HA_PROXY=1 $(BIN)/serve run deploy/ray/serve.yaml

# Load and faults for 10 minutes against a real server (SOAK_ARGS: --duration, --sessions, --json);
# exits non-zero on lost words, hangs, unexpected errors or leaks (a 40 s variant runs in `make test`)
soak: setup system-deps
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# Uploads at concurrency 1-16 against faster-whisper (beam 5, and its batched pipeline), then the
# engine per Whisper weight mode (BENCH_ARGS: --levels, --quantize, --rounds, --json)
bench: setup system-deps
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python -m bench.http_load $(BENCH_ARGS)

# The Whisper live policy at the pace of speech, in-process: per slice, streamed vs uploaded WER,
# committed-word wait on the audio clock, model time per session (BENCH_ARGS: --slices, --set NAME=VALUE)
bench-live-policy: setup system-deps bench-deps
	$(BIN)/python -m bench.live_policy $(BENCH_ARGS)

# One engine step at 1/8/16 decode rows (Whisper tiny.en, tiny Qwen3-ASR): wall, torch ops, Python
bench-step: setup
	$(BIN)/python -m bench.step $(BENCH_ARGS)

# The streaming bench's corpus (bench/corpus.py): espeak-ng and flite voices, sox, and real speech
# from alsa-utils and pocketsphinx-testdata (two more recordings come from PyPI by `pip download`).
BENCH_DEBS := espeak-ng sox alsa-utils flite pocketsphinx-testdata
bench-deps:
	@missing=""; for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi

# Streamed vs uploaded accuracy per corpus slice, then N real-time sessions (BENCH_ARGS: --slices, --levels, ...)
bench-stream: setup system-deps bench-deps
	$(BIN)/python -m bench.stream_load $(BENCH_ARGS)

# The same with WhisperLive 0.10.0 as the peer, in its own environment (never the project's):
# whisper-live without its dependency list (PyAudio, openvino, ...), plus what its server imports;
# torch as for setup (a CPU build without an NVIDIA GPU).
PEER_VENV ?= .venv-bench-whisperlive
PEER_BIN := $(PEER_VENV)/bin
$(PEER_VENV)/.installed:
	$(call venv_with_torch,$(PEER_VENV))
	$(PEER_BIN)/python -m pip install -q --no-deps whisper-live==0.10.0
	$(PEER_BIN)/python -m pip install -q faster-whisper==1.2.0 websockets fastapi uvicorn python-multipart scipy av numpy requests
	$(PEER_BIN)/python -c "import whisper_live.server, whisper_live.backend.faster_whisper_backend"
	touch $@

bench-stream-peer: setup system-deps bench-deps $(PEER_VENV)/.installed
	$(BIN)/python -m bench.stream_load --peer whisperlive $(BENCH_ARGS)

# Qwen3-ASR prefix KV reuse: per-chunk cost against session length, reuse on vs off (random weights)
bench-prefix: setup system-deps
	$(BIN)/python -m bench.prefix $(BENCH_ARGS)

bench-kernels: setup
	$(BIN)/python -m bench.kernels

# Ray Serve's two ingresses (Python proxy, HAProxy) against a direct `sasr serve`, same live load, on a
# namespaced head + worker (needs root)
bench-ingress: setup system-deps
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	$(BIN)/python -m bench.ingress $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
