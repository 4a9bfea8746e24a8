# Developer tasks. `make test` is what CI runs (after `pip install '.[test]'`).
.PHONY: build-dev test test-rust test-python lint format bench

build-dev:            ## build the extension in place for development
	pip install -e '.[test]'

test: test-rust test-python

test-rust:
	cargo test --quiet

test-python:
	python -m pytest -q

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	ruff check python tests
	python -m mypy.stubtest qiao._qiao --ignore-missing-stub

format:
	cargo fmt --all
	ruff check --fix python tests

bench: ; python bench/run.py
