#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one go, on a machine that has one (CI has none):
#
#   scripts/gpu-check.sh [OUT_DIR]      (default runs/gpu-check-YYYY-MM-DD)
#
# 1. nvidia-smi and `inception doctor` (which must see the GPU and pass its smoke test);
# 2. the whole test suite with INCEPTION_TEST_CUDA=1, so that the CUDA tests (tests/integration/cuda.rs)
#    fail instead of skipping when libtorch sees no device;
# 3. tests/integration/cuda.rs again, one at a time, printing the numbers: logits against PyTorch's on the
#    GPU (fp32 <= 1e-4, bf16 <= 5e-2, fp16 <= 1e-2 relative), short fp16 and bf16 training runs
#    whose loss falls, a run killed with SIGKILL and resumed, what --precision auto takes, and
#    2 processes of batch 4 against 1 of batch 8 (over NCCL with two GPUs or more; with one, over
#    Gloo on the shared GPU, NCCL refusing two ranks on one device);
# 4. the side-by-side benchmark against PyTorch AMP + channels-last on the GPU.
# Each step's output goes to OUT_DIR/NN-name.log; the summary says which passed. Exit code 1
# if any failed. Needs what `make test` needs (scripts/deps.sh installs it).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check-$(date +%F)}
mkdir -p "$out"
export PYTHONPATH=$PWD/.deps/py${PYTHONPATH:+:$PYTHONPATH}
failed=0
step() { # name command...
  local name=$1
  shift
  local log="$out/$name.log"
  echo "== $name: $*" | tee "$log"
  local start=$SECONDS
  if "$@" >>"$log" 2>&1; then
    echo "   ok ($((SECONDS - start)) s)"
  else
    echo "   FAILED ($((SECONDS - start)) s): see $log"
    tail -n 20 "$log" | sed 's/^/   | /'
    failed=1
  fi
}
step 00-nvidia-smi nvidia-smi
step 01-deps scripts/deps.sh
step 02-build cargo build --release
step 03-doctor ./target/release/inception doctor
if ! grep -q "compute capability" "$out/03-doctor.log"; then
  echo "   doctor lists no CUDA device: the CUDA checks below will fail"
  failed=1
fi
step 04-tests env INCEPTION_TEST_CUDA=1 cargo test --release
step 05-cuda-tests env INCEPTION_TEST_CUDA=1 cargo test --release --test integration cuda:: -- --nocapture --test-threads 1
step 06-bench python3 benches/side_by_side.py --device cuda
echo
grep -h "on cuda:\|on cuda (\|train loss by epoch" "$out/05-cuda-tests.log" 2>/dev/null
sed -n '/train img\/s/,$p' "$out/06-bench.log" 2>/dev/null
if [ "$failed" = 0 ]; then
  echo "gpu-check: all passed (logs in $out)"
else
  echo "gpu-check: some checks FAILED (logs in $out)"
fi
exit "$failed"
