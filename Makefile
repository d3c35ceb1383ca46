# make test : set up .venv (and missing Debian packages, chromium for the report test) and run the test suite
# make demo : set up, then calibrate the simulated rig, capture, build and score a twin scene
# make gpu-check : FOSSA on CUDA against the fixture and the CPU, then its speed (after make setup
#   TORCH=<a CUDA build of torch>; PY=python3 where that python already has the packages)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zedd-installed
DEMO_ROOT ?= demo
SCENE  ?= kitchen01
# torch 2.13.0 CPU: these machines take it from local disk; it satisfies the fossa extra's range. Elsewhere PyPI's
# Linux wheel is the CUDA build (several GB): make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: setup test demo clean-demo bench gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_system.sh
	bash tools/setup_system.sh
	test -x $(VENV)/bin/pip || python3 -m venv --clear $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -q -e ".[fossa,peers,test]"
	$(PY) -c "import open3d, ouster.sdk, gphoto2, cv2, torch, zedd_capture"
	touch $(STAMP)

test: $(STAMP)
	ZEDD_WITH_BROWSER=1 bash tools/setup_system.sh
	$(PY) -m pytest -q

demo: $(STAMP)
	bash tools/demo.sh $(PY) $(DEMO_ROOT) $(SCENE)

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

gpu-check:
	$(PY) -c "import sys, torch; sys.exit(None if torch.cuda.is_available() else f'gpu-check: torch {torch.__version__} sees no CUDA GPU')"
	$(PY) -m pytest -q -rs -s -p no:cacheprovider tests/test_fossa.py
	$(PY) bench/fossa_speed.py --repeats 3

clean-demo:
	rm -rf $(DEMO_ROOT)
