# `make test` and `make demo` install into .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: install test demo clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml scripts/install.sh scripts/build_mmcv.sh
	bash scripts/install.sh
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -rs tests

demo: $(STAMP)
	$(PY) tools/demo.py $(if $(PRETRAINED),--pretrained $(PRETRAINED))

clean-venv:
	rm -rf .venv
