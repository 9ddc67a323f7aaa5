#!/usr/bin/env bash
# The GPU path, end to end, on a machine with one CUDA GPU, in under 10 minutes:
#   1. the tests that skip without CUDA, and every backend through the engine at 480x640 in
#      fp32/fp16/bf16 with its labels compared to the CPU fp32 labels (tools/engine_check.py);
#   2. `rgbd-seg bench` of SSMA with the paper's ResNet-50 (preact_resnet50) and the esanet_add
#      baseline at 480x640 and 720x1280: eager, CUDA graphs and ONNX Runtime (CUDA provider where
#      installed) in fp32/fp16/bf16, torch.compile with CUDA graphs in bf16; each row carries its
#      fraction of the measured matmul peak of its precision (bf16 target: SSMA-R50 at 400
#      frames/s or more).
#      On CUDA every mode runs channels_last tensors and weights (the sweep's CUDA layout), so
#      "eager" is eager channels_last;
#   3. the whole node replaying 640x480 at 30 Hz on the GPU (target: overhead p50 <= 3 ms).
# Steps run in the order cuda_tests engine_check node_gpu bench_r50 bench_r50_compile (most
# telling first, so a cut-short run still says the most); each has its own time limit, and
# their limits add up to under 10 minutes. Run only when named: node_gpu_threads, the node on
# the GPU with cpu_threads 1 and 2 (the default is cores - 1: 15 intra-op threads spun on an
# H200's 16-core host with nothing for them to do), to compare with node_gpu's overhead; and
# publish_cost_gpu, the work after the forward against its publishes, side thread off and on.
# Usage: bench/gpu_check.sh OUT_DIR [STEP...]   (default every step; JSON and logs go to
#        OUT_DIR; exit 0 only if every step run passed)
# Environment: GPU_CHECK_RUN, the command wrapper (default ./run, which sets up the pinned
# environment; on a GPU image whose python3 already has CUDA torch, bench/with_image_python.sh).
# On a machine without CUDA it stops at once with exit code 2 and says so.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: bench/gpu_check.sh OUT_DIR [STEP...]}"
shift
ALL_STEPS=(cuda_tests engine_check node_gpu bench_r50 bench_r50_compile)
NAMED_ONLY=(node_gpu_threads publish_cost_gpu)
STEPS=("$@")
[ "${#STEPS[@]}" -gt 0 ] || STEPS=("${ALL_STEPS[@]}")
for s in "${STEPS[@]}"; do
  case " ${ALL_STEPS[*]} ${NAMED_ONLY[*]} " in
    *" $s "*) ;;
    *) echo "gpu_check: unknown step '$s' (steps: ${ALL_STEPS[*]}; named only:" \
      "${NAMED_ONLY[*]})" >&2; exit 64 ;;
  esac
done
RUN="${GPU_CHECK_RUN:-$ROOT/run}"  # the project's environment wrapper
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# The first call through the wrapper may set up its environment: its output is kept.
if ! "$RUN" python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  >"$OUT/setup.log" 2>&1; then
  tail -n 20 "$OUT/setup.log" >&2
  echo "gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False" \
    "or the environment could not start; output above, in $OUT/setup.log); nothing was run" >&2
  exit 2
fi

failed=()
step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log
  local name="$1" limit="$2"
  shift 2
  case " ${STEPS[*]} " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failed+=("$name (exit $rc)")
}

"$RUN" python - >"$OUT/machine.json" <<'EOF'
import json, platform, torch
print(json.dumps({
    'gpu': torch.cuda.get_device_name(0),
    'cuda': torch.version.cuda,
    'torch': torch.__version__,
    'cpu': platform.processor() or platform.machine(),
}))
EOF
cat "$OUT/machine.json"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
  --format=csv >"$OUT/nvidia_smi.csv" 2>&1 && cat "$OUT/nvidia_smi.csv"

cd "$ROOT" || exit 1
# The tests marked cuda, collected from the files that hold them only (quicker, and the rest
# of the suite may need packages a GPU image lacks).
mapfile -t cuda_tests < <(grep -rlE 'pytest\.mark\.cuda\b' test --include='test_*.py')
step cuda_tests 100 "$RUN" python -m pytest -q -rs -m cuda -p no:cacheprovider \
  --junitxml="$OUT/cuda_tests.xml" "${cuda_tests[@]}"
step engine_check 100 "$RUN" python -m rgbd_seg_ros.tools.engine_check \
  --size 480x640 --json "$OUT/engine_check.json"
step node_gpu 80 "$RUN" python -m rgbd_seg_ros.tools.node_bench --device cuda \
  --seconds 20 --json "$OUT/node_gpu.json"
step node_gpu_threads 160 bash -c 'for threads in 1 2; do
  "$0" python -m rgbd_seg_ros.tools.node_bench --device cuda --cpu-threads "$threads" \
    --seconds 20 --json "$1/node_gpu_threads_$threads.json" || exit; done' "$RUN" "$OUT"
# The engine's work after the forward against its publishes into DDS, frame by frame in one
# process (tools/publish_cost.py), with the side thread off (CUDA's default) and on.
step publish_cost_gpu 120 bash -c 'for side in off on; do
  "$0" python -m rgbd_seg_ros.tools.publish_cost --device cuda --side-thread "$side" \
    --frames 100 --json "$1/publish_cost_gpu_side_$side.json" || exit; done' "$RUN" "$OUT"
step bench_r50 150 "$RUN" rgbd-seg bench --backends ssma --encoders preact_resnet50 \
  --sizes 480x640 720x1280 --devices cuda --precisions fp32 fp16 bf16 \
  --modes eager cudagraph onnxruntime --iters 30 --warmup 5 --no-hha \
  --json "$OUT/bench_r50.json"
# torch.compile costs about a minute per model and size: bf16 at the camera size only, in the
# mode a deployment would use on a GPU (CUDA graphs, frozen weights; the default mode is
# launch-bound at batch 1: 9.9 ms for SSMA-R50 bf16 on an H200, against 2.4 ms).
step bench_r50_compile 170 "$RUN" rgbd-seg bench --backends ssma --encoders preact_resnet50 \
  --sizes 480x640 --devices cuda --precisions bf16 --modes compile_cudagraph \
  --iters 50 --warmup 5 --no-hha --json "$OUT/bench_r50_compile.json"

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'gpu_check: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "gpu_check: all steps passed; JSON in $OUT"
