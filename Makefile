# The two set-up commands of the README: `make train` (the main job) and `make test` (the whole suite).
# Both create .venv and install the package with all its extras on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-fast install bench detect

install: $(STAMP)

# The stamp covers every install below: a change to the extras or to this recipe reinstalls.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# opencv-python-headless (an older venv's) and opencv-contrib-python-headless ship the same cv2: keep contrib only.
	$(PY) -m pip uninstall --quiet --yes opencv-python-headless 2>/dev/null || true
	$(PY) -m pip install --quiet -e ".[export,explain,serve,detect,scale,test]"
	# Test reference for inception5h: lucent's InceptionV1 file only. --no-deps: its requirements (kornia, ...) are
	# not needed by that file and must not pull in another torch.
	$(PY) -m pip install --quiet --no-deps "torch-lucent==0.1.8"
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/googlenet train

# The detection main job: R-CNN on GoogLeNet, trained and evaluated on the generated offline scenes.
detect: $(STAMP)
	$(VENV)/bin/googlenet detect train --out runs/detect

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/googlenet bench infer
