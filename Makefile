# Two commands do all of the set-up on a fresh machine:
#   make train   installs libtorch (once), builds, runs the main job: 5-fold cross-validation of
#                the recipe, which measures it, then the recipe once on every image: the
#                network it ships (README: "Which weights to ship")
#   make test    installs libtorch and the test deps (once), builds, runs every test
.PHONY: train test bench build deps libtorch clean

CARGO ?= cargo
# The dataset: MSLD as the repository ships it (data/README.md); make train DATA=DIR for another.
DATA ?= data/monkeypox

train: build
	@[ -d "$(DATA)" ] || { echo "make train: no dataset at $(DATA) (a clone has MSLD in data/monkeypox; data/README.md; make train DATA=DIR)" >&2; exit 1; }
	./target/release/inception cv --data "$(DATA)"
	./target/release/inception train --data "$(DATA)" --val-fraction 0

test: deps
	$(CARGO) test --release

# Speed: the loader and the network (cargo bench), then PyTorch side by side.
bench: deps build
	$(CARGO) bench --bench loader
	$(CARGO) bench --bench model
	PYTHONPATH=.deps/py python3 benches/side_by_side.py --data "$(DATA)" --profile

build: libtorch
	$(CARGO) build --release

libtorch:
	@scripts/deps.sh --libtorch >/dev/null

deps:
	@scripts/deps.sh

clean:
	$(CARGO) clean
