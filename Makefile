# Two commands do all the set-up on a fresh machine:
#   make demo   the main job: synthetic bag -> replay through fusion + detection -> report in out/
#   make test   ruff + the test suite (what CI runs, via .ci/run)
# Both create or update .venv in the repo and install what they need into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out
# Tests, the demo and benchmarks start ROS nodes: keep DDS discovery on this machine and on a
# domain of our own. (The package itself never forces these on users.)
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42

.PHONY: demo test test-all venv bench bench-transport bench-metrics bench-replay bench-detection train-cpu lint clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mmdrfuse_ros.bag.demo --out $(OUT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

# Everything, the slow tests too (GPU tests skip themselves without CUDA).
test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fusion.py

bench-transport: $(STAMP)
	$(BIN)/python benchmarks/bench_transport.py

bench-metrics: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py

bench-detection: $(STAMP)
	$(BIN)/python benchmarks/bench_detection.py

bench-replay: $(STAMP)
	$(BIN)/python benchmarks/bench_replay.py --bag $(OUT)/demo_bag --out $(OUT)/bench_replay

# Retrain the shipped student on RoadScene (about 12 minutes on 2 cores).
train-cpu: $(STAMP)
	$(BIN)/python training/train.py --data ../shared/data/roadscene --out runs/cpu --preset cpu --threads 1

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(OUT) build install log *.egg-info
