# Two commands on a fresh machine: `make demo` and `make test`.
# Every target creates (or reuses) the local virtual environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=
# UTF-8 text I/O whatever the locale: a native library in the test session can switch LC_CTYPE to "C"
# (seen here: reports with "±" then failed to read back as ASCII).
export PYTHONUTF8 := 1

.PHONY: install demo test test-all bench bench-data bench-model bench-train bench-infer bench-default bench-backends bench-gpu lock clean

install: $(STAMP)

# Reinstall when the dependency list or the lock file changes.
$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade "pip>=23.2" wheel
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# The end-to-end demo on the embedded default (configs/demo.yaml): generate + convert the phantom
# cohorts (first run only), train compact SAM-Mix-50 and a U-Net-50 baseline in parallel on CPU,
# evaluate slice2d/volume3d in- and cross-domain, segment a held-out volume with the infer path,
# segment the committed real CT example, write $(DEMO_OUT)/report.md with tables and figures.
# 12.2 minutes measured on an idle 2-core AMD EPYC host (docs/demo.md); less on a faster CPU.
demo: install
	$(VENV)/bin/sam-mix demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Every benchmark, then docs/benchmarks.md from their JSON records (runs/bench/*.json).
bench: bench-data bench-model bench-train bench-infer bench-default bench-backends bench-gpu
	$(PY) benchmarks/report.py --out docs/benchmarks.md

bench-data: install
	$(PY) benchmarks/bench_data.py

bench-model: install
	$(PY) benchmarks/bench_model.py

bench-train: install
	$(PY) benchmarks/bench_train.py

bench-infer: install
	$(PY) benchmarks/bench_infer.py
	$(PY) benchmarks/bench_lite.py

# The default path, file in to mask, on the phantom and ../shared's real CTs, beside the naive loop
# (the packaged default model in volume prompt mode; BENCH_CHECKPOINT=best.pt: another SAM-Mix checkpoint),
# then the same with --fast.
bench-default: install
	$(PY) benchmarks/bench_default.py $(if $(BENCH_CHECKPOINT),--checkpoint $(BENCH_CHECKPOINT))
	$(PY) benchmarks/bench_default.py --fast $(if $(BENCH_CHECKPOINT),--checkpoint $(BENCH_CHECKPOINT))

# Encoder backends (eager fp32 / ONNX Runtime fp32 / bf16 / int8): 3D Dice change and speed on real CT.
bench-backends: install
	$(PY) benchmarks/bench_backends.py

# CUDA only: slices/s of LiteMedSAM and ViT-B under fp16 / bf16 autocast; one skip line without CUDA.
bench-gpu: install
	$(PY) benchmarks/bench_gpu.py

# Refresh constraints.txt from the current environment (after a deliberate upgrade).
lock: install
	$(PY) -m pip freeze --exclude-editable | grep -v '^sam.mix.monai' > constraints.txt

clean:
	rm -rf runs .pytest_cache
