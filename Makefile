# Two commands for users: `make demo` and `make test`. Both set up everything they need, idempotently.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PYTHON := /usr/bin/python3
DEB_PACKAGES := qgis python3-qgis qgis-providers python3-rasterio python3-gdal python3-scipy \
	python3-matplotlib python3-h5py python3-venv python3-cryptography xvfb zip
export QT_QPA_PLATFORM ?= offscreen

.PHONY: demo demo-raw test bench package clean system-deps venv plugin-link

system-deps: .stamp-system-deps
.stamp-system-deps:
	@if ! dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEB_PACKAGES); \
		else \
			echo "Missing Debian packages; run as root: apt-get install $(DEB_PACKAGES)"; exit 1; \
		fi; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt requirements-dev.txt .stamp-system-deps
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# tests and scripts import the checkout as `smdownscale` through this link
plugin-link:
	@mkdir -p .plugin-path && ln -sfn .. .plugin-path/smdownscale

demo: venv plugin-link
	PYTHONPATH=.plugin-path $(PY) scripts/demo.py demo-output

# the same demo starting from raw inputs (reflectance, S1 scenes, PFT land cover, SMAP granules)
demo-raw: venv plugin-link
	PYTHONPATH=.plugin-path $(PY) scripts/demo.py --raw demo-output-raw

test: venv
	$(PY) -m pytest -q tests

bench: venv plugin-link
	PYTHONPATH=.plugin-path $(PY) bench/run_bench.py $(BENCH_ARGS)

package:
	scripts/make-package

clean:
	rm -rf demo-output demo-output-raw dist .pytest_cache
