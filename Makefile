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

# The detector is YOLOX-Nano when a model is found: ../shared's copy when present, else the user
# cache, filled best-effort by `mmdrfuse models fetch` (offline: the demo runs with HOG and its
# report says so); fusion and detection run together, as on a robot.
DEMO_MODEL ?= ../shared/models/yolox_nano/yolox_nano.onnx
demo: $(STAMP)
	@test -f $(DEMO_MODEL) || $(BIN)/mmdrfuse models path >/dev/null 2>&1 \
		|| $(BIN)/mmdrfuse models fetch --timeout 10 \
		|| echo "demo: no YOLOX model could be fetched: the detector falls back to HOG"
	$(BIN)/mmdrfuse demo --out $(OUT) \
		$(if $(wildcard $(DEMO_MODEL)),--detector-param model_path=$(abspath $(DEMO_MODEL)))

# Real data: the 30 labelled LLVIP night pairs of ../shared (when present) -> bag with their
# person boxes -> replay through both nodes with YOLOX-Nano -> $(OUT)/llvip_report.
# LLVIP thermal is 8-bit and already display-scaled: thermal_norm=auto uses it as is (the same
# fusion as `mmdrfuse detect`); a low score threshold lets AP see the whole precision curve.
LLVIP       ?= ../shared/data/llvip/labelled
LLVIP_MODEL ?= ../shared/models/yolox_nano/yolox_nano.onnx
.PHONY: demo-llvip
demo-llvip: $(STAMP)
	@test -d $(LLVIP)/ir || { echo "demo-llvip: no LLVIP pairs at $(LLVIP) (set LLVIP=...)"; exit 1; }
	@test -f $(LLVIP_MODEL) || { echo "demo-llvip: no YOLOX model at $(LLVIP_MODEL) (set LLVIP_MODEL=..., or get one: mmdrfuse models fetch, then LLVIP_MODEL=\$$($(BIN)/mmdrfuse models path))"; exit 1; }
	rm -rf $(OUT)/llvip_bag
	$(BIN)/mmdrfuse bag from-folders --ir $(LLVIP)/ir --vis $(LLVIP)/vi \
		--annotations $(LLVIP)/annotations --out $(OUT)/llvip_bag --rate 2 --no-progress
	$(BIN)/mmdrfuse replay $(OUT)/llvip_bag --report $(OUT)/llvip_report --no-progress \
		--fusion-param thermal_norm=auto \
		--detector-param backend=onnx --detector-param model_path=$(abspath $(LLVIP_MODEL)) \
		--detector-param score_threshold=0.05

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
	$(BIN)/mmdrfuse train --data ../shared/data/roadscene --data ../shared/data/llvip/unlabelled \
		--out runs/cpu --preset cpu --threads 1

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(OUT) build install log *.egg-info
