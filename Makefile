# `make test` and `make demo` install into .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: install test test-kernels demo clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml setup.py scripts/install.sh scripts/build_mmcv.sh
	bash scripts/install.sh
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -rs tests

# the arithmetic-order tests again under PyTorch's scalar (non-vector) CPU kernels
ARITHMETIC_TESTS := tests/test_parity.py tests/test_mixed_batches.py tests/test_cams.py
test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -rs $(ARITHMETIC_TESTS)

demo: $(STAMP)
	$(PY) tools/demo.py $(if $(PRETRAINED),--pretrained $(PRETRAINED))

clean-venv:
	rm -rf .venv
