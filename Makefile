# Set-up and the two everyday commands on a fresh machine (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on the reference machines; on a CUDA machine pip picks the CUDA build of the same version.
TORCH ?= torch==2.13.0

.PHONY: install demo test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[train,eval,search,bench,dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/accelerate launch -q --config_file training/accelerate.yaml --cpu training/pretrain.py --overwrite_output_dir

test: install
	$(BIN)/python -m pytest
