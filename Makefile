# One task runner for developers, CI and the README.
CARGO ?= cargo

.PHONY: demo test lint bench ci

# The main job on the embedded default (no Redis, no PostgreSQL).
demo:
	$(CARGO) run --release -- demo

# The whole test suite. Installs what it needs when missing and starts Redis and PostgreSQL
# when they are not running (scripts/test-services.sh, the same script .ci/run uses).
test:
	bash scripts/test-services.sh
	$(CARGO) test --locked --features dev-tools

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --features dev-tools -- -D warnings

# Micro-benchmarks (release profile); each file in benches/ says what it measures.
bench:
	$(CARGO) bench --locked --features dev-tools

ci: lint test
