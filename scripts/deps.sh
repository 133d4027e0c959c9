#!/usr/bin/env bash
# Installs the project's dependencies from PyPI, once, into the git-ignored folder .deps/py:
# torch==2.13.0 (whose libtorch the build links against) and the PyTorch side of the tests
# (scripts/requirements.txt); and into .deps/gloo the headers of gloo (Debian's libgloo-dev,
# unpacked, not installed), which the C++ shim of multi-process training (src/shim/dist.cpp)
# compiles against: libtorch ships gloo compiled in, not its headers. Without them the tool
# builds without multi-process training (it says so when asked for it). For the tests, also
# Debian's chromium and chromium-driver (the browser test of `inception serve`'s page), by
# apt-get when missing. A second run is a no-op.
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

gloo() {
  local dir=.deps/gloo
  if [ -f "$dir/usr/include/gloo/context.h" ]; then
    return
  fi
  command -v apt-get >/dev/null || {
    echo "deps: no apt-get: building without multi-process training (gloo headers)" >&2
    return
  }
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && { apt-get download libgloo-dev >/dev/null 2>&1 ||
      { apt-get update >/dev/null 2>&1 && apt-get download libgloo-dev >/dev/null 2>&1; }; }); then
    echo "deps: could not download Debian's libgloo-dev: building without multi-process training" >&2
    rm -rf "$tmp"
    return
  fi
  rm -rf "$dir.partial"
  dpkg-deb -x "$tmp"/libgloo-dev_*.deb "$dir.partial"
  rm -rf "$tmp" "$dir"
  mv "$dir.partial" "$dir"
}

browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    return
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && sudo="sudo -n"
  fi
  echo "deps: installing Debian's chromium and chromium-driver (the page's browser test)" >&2
  if ! { $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 ||
      { $sudo apt-get update >/dev/null 2>&1 &&
        $sudo apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }; }; then
    echo "deps: could not install chromium and chromium-driver: the browser test will fail" >&2
  fi
}

if [ "${1:-}" = "--libtorch" ]; then
  if [ -n "${LIBTORCH:-}" ] && [ "$LIBTORCH" != "$root/$deps/torch" ]; then
    if [ ! -e "$LIBTORCH/lib/libtorch.so" ] && [ ! -e "$LIBTORCH/lib/libtorch_cpu.so" ]; then
      echo "deps: LIBTORCH=$LIBTORCH has no lib/libtorch.so" >&2
      exit 1
    fi
    gloo
    echo "$LIBTORCH"
    exit 0
  fi
  install
  gloo
  echo "$root/$deps/torch"
else
  install
  gloo
  browser
fi
