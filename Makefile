# Two commands do all of the set-up on a fresh machine:
#   make train   installs libtorch (once), builds, runs the main job
#   make test    installs libtorch and the test deps (once), builds, runs every test
.PHONY: train test build deps libtorch clean

CARGO ?= cargo

train: build
	./target/release/inception summary

test: deps
	$(CARGO) test --release

build: libtorch
	$(CARGO) build --release

libtorch:
	@scripts/deps.sh --libtorch >/dev/null

deps:
	@scripts/deps.sh

clean:
	$(CARGO) clean
