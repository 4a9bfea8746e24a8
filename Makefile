# Developer tasks. `make test` runs every suite against the installed qiao (after
# `pip install '.[test]'`); CI (.ci/run) runs the same suites against the wheel from
# `make dist`, installed in a fresh environment.
.PHONY: build-dev dist test test-rust test-python test-tls test-h2 lint format bench

build-dev:            ## build the extension in place for development
	pip install -e '.[test]'

# The sdist, and the release wheel built from it, in dist/ (.ci/build-dist).
dist: ; .ci/build-dist

test: test-rust test-python test-tls test-h2

# The PEP 3333, HTTP/1.1 and framework modules again, every server serving HTTPS
# (QIAO_TEST_TLS, see tests/python/conftest.py).
TLS_MODULES = test_flask test_django test_falcon test_bottle test_environ test_input \
	test_start_response test_app_iterable test_validator test_http11

test-rust:
	cargo test --quiet

test-python:
	python -m pytest -q

test-tls:
	QIAO_TEST_TLS=1 python -m pytest -q $(TLS_MODULES:%=tests/python/%.py)

# The same modules over HTTP/2 (QIAO_TEST_H2: TLS, ALPN h2, the raw-socket tests' HTTP/1.1
# carried as streams by tests/python/h2bridge.py); tests marked http1_only skip.
test-h2:
	QIAO_TEST_H2=1 python -m pytest -q $(TLS_MODULES:%=tests/python/%.py)

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	ruff check python tests build_backend
	python -m mypy.stubtest qiao._qiao --ignore-missing-stub

format:
	cargo fmt --all
	ruff check --fix python tests build_backend

bench: ; python bench/run.py
