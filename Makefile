# Set-up and the two everyday jobs. `make demo` and `make test` each build .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dunemap demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) dunemap_demo .pytest_cache
