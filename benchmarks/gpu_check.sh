#!/usr/bin/env bash
# The GPU check: tests and measures rlstack on one CUDA device, every log and JSON in one folder.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT, else a new temp dir)
#
# On the GPU machine (torch, numpy, pytest there; no optree, no MLflow), wheels brought along
# in .wheels/ are installed offline into a temp dir first. Make them here, before the run:
#   pip download optree --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .wheels
#
# Parts, each under its own timeout; a failure in one does not stop the others, and
# OUT_DIR/summary.txt ends with one line per part (its exit status and seconds):
#   tests          tests/test_cuda.py, slow tests included
#   throughput     benchmarks/throughput.py: discrete-1x-default in eager, compiled, compiled + TF32,
#                  compiled + CUDA graphs and compiled + bf16 AMP
#   large          the same for discrete-large (131072 envs x 32)
#   recurrent      recurrent-1x-default (LSTM 256, seq_len 4): eager, compiled, compiled + bf16 AMP
#   population     benchmarks/population.py: K = 8, 64 and 512 CartPole members against one
#   cartpole       benchmarks/classic_control.py: CartPole-v1's preset (episodic) to a return of 475, 2048 and 8192 envs
#   rsl_rl_cold    benchmarks/rsl_rl.py --ours-only: Isaac Lab's Cartpole settings (4096 envs x 16,
#                  32-32 ELU) through the rsl_rl adapter, the env's tensors on the GPU, compiled first
#                  and in the background (the default; where torch lacks its APIs, its fallback),
#                  with empty compile caches: first iteration s, transitions/s, peak memory
#   rsl_rl_warm    the same again in a fresh process, the caches the cold part left
# Without a CUDA device every part but `tests` (whose CUDA tests skip) is skipped, unless
# GPU_CHECK_SMOKE=1: then each part runs on the CPU at a toy size, to check the commands.
# Ends inside 8 minutes: the timeouts below add up to 8 min.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${OUT:-$(mktemp -d)}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/gpu_check.log"
: >"$out/summary.txt"
cd "$repo" || exit 1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Wheels brought along: installed into a temp dir, never into the machine's Python.
site="$(mktemp -d)"
if compgen -G ".wheels/*.whl" >/dev/null; then
    python -m pip install -q --no-index --no-deps --target "$site" .wheels/*.whl 2>&1 | tee -a "$log"
fi
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"

python - 2>&1 <<'EOF' | tee -a "$log"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    device=cuda smoke=0
elif [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    device=cpu smoke=1
else
    device=none smoke=0
fi

# part NAME TIMEOUT_S COMMAND...: runs COMMAND under its timeout, output to the log, status to the summary.
part() {
    local name="$1" limit="$2"
    shift 2
    if [ "$name" != tests ] && [ "$device" = none ]; then
        echo "$name: skipped (no CUDA device)" | tee -a "$log" "$out/summary.txt"
        return
    fi
    echo "=== $name: $* (timeout ${limit}s)" | tee -a "$log"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "$name: rc=$rc in $((SECONDS - start)) s" | tee -a "$log" "$out/summary.txt"
}

modes="eager compiled compiled-tf32 compiled-graphs compiled-amp"
if [ "$smoke" = 1 ]; then
    modes="eager compiled" recurrent_modes="eager" size=(--num-envs 64 --repeats 1) members=1,2
    iters=(--iters 1 --rounds 1 --no-compile) cartpole_envs=(64) cartpole=(--check-every 5 --limit 5)
    rsl_rl=(--num-envs 64 --rounds 1 --iterations 1)
else
    recurrent_modes="eager compiled compiled-amp" size=(--repeats 5) members=1,8,64,512
    iters=(--iters 5 --rounds 2) cartpole_envs=(2048 8192) cartpole=(--check-every 2 --limit 20)
    rsl_rl=(--num-envs 4096 --rounds 2 --iterations 5)
fi
caches="$(mktemp -d)"  # the rsl_rl parts' compile caches: empty for the cold part
dev="${device/none/cpu}"

part tests 45 python -m pytest -q -m "slow or not slow" -p no:cacheprovider tests/test_cuda.py
# shellcheck disable=SC2086
part throughput 75 python benchmarks/throughput.py --device "$dev" --configs discrete-1x-default --modes $modes \
    "${size[@]}" --out "$out/throughput-cuda.json"
# shellcheck disable=SC2086
part large 70 python benchmarks/throughput.py --device "$dev" --configs discrete-large --modes $modes \
    "${size[@]}" --out "$out/throughput-large-cuda.json"
# shellcheck disable=SC2086
part recurrent 40 python benchmarks/throughput.py --device "$dev" --configs recurrent-1x-default \
    --modes $recurrent_modes "${size[@]}" --out "$out/throughput-recurrent-cuda.json"
part population 55 python benchmarks/population.py --device "$dev" --members "$members" "${iters[@]}" \
    --out "$out/population-cuda.json"
part cartpole 65 python benchmarks/classic_control.py --device "$dev" --envs CartPole-v1 --seeds 0 \
    --num-envs "${cartpole_envs[@]}" "${cartpole[@]}" --out "$out/classic_control-cuda.json"

for cache in cold warm; do
    part "rsl_rl_$cache" "$([ $cache = cold ] && echo 90 || echo 40)" env \
        RLSTACK_COMPILE_CACHE="$caches/rlstack" TORCHINDUCTOR_CACHE_DIR="$caches/inductor" \
        python benchmarks/rsl_rl.py --ours-only --configs cartpole --device "$dev" "${rsl_rl[@]}" \
        --out "$out/rsl-rl-$cache-cuda.json"
done

rm -rf "$site" "$caches"
echo "--- summary ($out)" && cat "$out/summary.txt"
! grep -v "rc=0 \|skipped" "$out/summary.txt" >/dev/null
