#!/usr/bin/env bash
# Everything a GPU machine is for, in one call of at most 8 minutes on one GPU:
#   1. the GPU figures (scripts/bench_gpu.py): matmul peaks; resnet56 at CIFAR-10's shape per
#      strategy and engine.precision, with the projection of Li et al.'s 51×51, 50,000-sample
#      surface and each precision's error against fp32; the MPO step of the BN pair batched vs
#      the loop; the values against the CPU path (at most BENCH_S seconds, 270 by default);
#   2. the CUDA tests (pytest -m cuda tests/test_cuda.py; at most TESTS_S seconds, 180).
#
#   scripts/bench_gpu.sh --out DIR           # on a GPU: DIR/bench_gpu.json, DIR/cuda_tests.xml
#   scripts/bench_gpu.sh --dry-run           # tiny sizes on any machine, the CUDA tests only
#                                            # collected (CI runs this: tests/test_bench_gpu.py)
#   scripts/bench_gpu.sh --json f.json ...   # other arguments go to scripts/bench_gpu.py
# The exit status is 0 only when both steps passed; the JSON keeps the sections done in time.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
BENCH_S=${BENCH_S:-270}
TESTS_S=${TESTS_S:-180}

out="" dry=0 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --dry-run) dry=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$out" ]; then
  mkdir -p "$out"
  [[ " ${args[*]-} " == *" --json "* ]] || args+=(--json "$out/bench_gpu.json")
fi

echo "== 1. the GPU figures (at most ${BENCH_S} s)"
timeout -s INT -k 10 "$BENCH_S" "$PYTHON" scripts/bench_gpu.py "${args[@]}"
bench=$?
case "$bench" in 124|137) echo "the figures ran past ${BENCH_S} s: the JSON holds the sections done" ;; esac

pytest=("$PYTHON" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider)
if [ "$dry" -eq 1 ]; then
  echo "== 2. the CUDA tests, collected only (a dry run)"
  timeout -k 10 "$TESTS_S" "${pytest[@]}" --collect-only
else
  echo "== 2. the CUDA tests (at most ${TESTS_S} s)"
  report=()
  [ -n "$out" ] && report=(--junitxml "$out/cuda_tests.xml")
  # SIGINT: pytest stops as on Ctrl-C and still writes the report of the tests done
  timeout -s INT -k 15 "$TESTS_S" "${pytest[@]}" --durations=10 "${report[@]}"
fi
tests=$?
case "$tests" in 124|137) echo "the CUDA tests ran past ${TESTS_S} s: the report holds those done" ;; esac
echo "== bench_gpu.sh: figures exit ${bench}, CUDA tests exit ${tests}"
[ "$bench" -eq 0 ] && [ "$tests" -eq 0 ]
