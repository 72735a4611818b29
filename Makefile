# One task runner for developers, CI and the README.
CARGO ?= cargo

.PHONY: demo test lint bench ci

# The main job on the embedded default (no Redis, no PostgreSQL).
demo:
	$(CARGO) run --release -- demo

# The whole test suite.
test:
	$(CARGO) test --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Micro-benchmarks (release profile); each file in benches/ says what it measures.
bench:
	$(CARGO) bench --locked

ci: lint test
