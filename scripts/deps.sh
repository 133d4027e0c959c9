#!/usr/bin/env bash
# Installs the project's dependencies from PyPI, once, into the git-ignored folder .deps/py:
# torch==2.13.0 (whose libtorch the build links against) and the PyTorch side of the tests
# (scripts/requirements.txt). A second run is a no-op.
#
#   scripts/deps.sh             install everything (the tests need it)
#   scripts/deps.sh --libtorch  only what the build needs: nothing when $LIBTORCH names a
#                               libtorch already; prints the libtorch folder the build uses
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps=.deps/py
stamp=$deps/.installed
want=$(sha256sum scripts/requirements.txt | cut -c1-16)

install() {
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "deps: installing scripts/requirements.txt into $deps (about 5 GB, once)" >&2
  rm -rf "$deps.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$deps.partial" -r scripts/requirements.txt >&2
  rm -rf "$deps"
  mv "$deps.partial" "$deps"
  echo "$want" > "$stamp"
}

if [ "${1:-}" = "--libtorch" ]; then
  if [ -n "${LIBTORCH:-}" ] && [ "$LIBTORCH" != "$root/$deps/torch" ]; then
    if [ ! -e "$LIBTORCH/lib/libtorch.so" ] && [ ! -e "$LIBTORCH/lib/libtorch_cpu.so" ]; then
      echo "deps: LIBTORCH=$LIBTORCH has no lib/libtorch.so" >&2
      exit 1
    fi
    echo "$LIBTORCH"
    exit 0
  fi
  install
  echo "$root/$deps/torch"
else
  install
fi
