# The two commands a newcomer needs: `make demo` (run every notebook, print the results table)
# and `make test` (unit tests + notebook checks). Both set up everything they need first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/mixseg-lite
STAMP := $(VENV)/.installed
ATLAS := /usr/share/mricron/templates/aal.nii.gz
# CPU-only torch for these machines and CI; a user installing with pip elsewhere gets a normal torch.
CONSTRAINTS ?= constraints-cpu.txt

.PHONY: setup system-deps demo test test-another-cpu notebooks check student bench lock clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e ".[notebooks,test,distributed]"
	@touch $(STAMP)

# The real atlas (REFERENCE D) comes from the Debian/Ubuntu package mricron-data.
system-deps:
	@if [ ! -f $(ATLAS) ]; then \
	  if command -v apt-get >/dev/null; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq mricron-data >/dev/null; \
	  else \
	    echo "warning: install the Debian/Ubuntu package mricron-data for the atlas dataset" >&2; \
	  fi; \
	fi

demo: setup
	$(CLI) demo --out runs/demo

test: setup
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -q -p no:cacheprovider --durations=15

# The notebook checks again on another machine's kernel path: oneDNN limited to SSE4.1, ATen's
# portable (non-vectorised) kernels, one thread. Trained scores differ there in the last digits;
# what nbval compares must not (CONTRIBUTING.md, "Checks that hold on every machine").
ANOTHER_CPU := ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1
test-another-cpu: setup
	$(ANOTHER_CPU) $(PY) -m pytest notebooks --nbval-lax --nbval-current-env -q -p no:cacheprovider --durations=5

# Re-execute every notebook source into its committed .ipynb twin (papermill, default parameters).
notebooks: setup
	$(CLI) build

check: setup
	$(CLI) check

# Write course/student/NN_name.ipynb from each notebook source with exercises: every solution
# replaced by todo("N.M"), outputs cleared (CONTRIBUTING.md, "Exercises"). Commit the result.
student: setup
	$(CLI) student

bench: setup
	$(PY) benchmarks/bench.py

# Pin binder/requirements.txt to the versions installed here (run after `make test` passes).
lock: setup
	$(PY) -m mixseg_lite.lockfile > binder/requirements.txt

clean:
	rm -rf runs notebooks/outputs .pytest_cache
