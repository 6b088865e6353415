# Set-up and the two everyday commands on a fresh machine (see README.md), and the documentation site.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on the reference machines; on a CUDA machine pip picks the CUDA build of the same version.
TORCH ?= torch==2.13.0

.PHONY: install browser demo test docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[train,eval,search,bench,app,onnx,dev]"
	@$(MAKE) --no-print-directory browser
	touch $@

install: $(VENV)/.installed

# Chromium for the app's browser test (tests/test_app_browser.py drives Debian's `chromium` through Playwright; no
# browser download). Installed with apt where it is missing and this is root on Debian; never fails the install:
# without Chromium that one test is skipped, with the reason.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt) for the app's browser test"; \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium >/dev/null ) || echo "apt could not install chromium: the browser test will be skipped"; \
	else \
		echo "no chromium: the app's browser test will be skipped (Debian: apt-get install chromium, as root)"; \
	fi

demo: install
	$(BIN)/accelerate launch -q --config_file training/accelerate.yaml --cpu training/pretrain.py --overwrite_output_dir

test: install
	$(BIN)/python -m pytest

# The documentation site (mkdocs.yml, pages in docs/): built strictly, then served and rebuilt as docs/ changes.
DOCS_ADDR ?= 127.0.0.1:8000

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr $(DOCS_ADDR)
