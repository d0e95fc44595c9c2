#!/usr/bin/env bash
# One lease of a GPU machine: the torch path's device checks, the throughput grid against
# EvoTorch (with CUDA graphs unless GRAPHS=0), a kernel profile of a few rows (PROFILE=1), and
# torch.compile on small rows (COMPILE_S > 0). Run from the repository root on the device machine,
# with EvoTorch's wheels in .whl/ (benchmarks/stubs/README.md, shared/design/benchmarks.md):
#   OUT=/some/dir bash benchmarks/gpu_session.sh [DEADLINE_S] [EVOTORCH_S] [COMPILE_S]
# Everything it measures goes to $OUT (JSON and the log); each step has its own time limit so one
# slow step cannot take the others' time.
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_session}
DEADLINE=${1:-220}
EVOTORCH=${2:-50}
COMPILE=${3:-0}
GRAPHS=${GRAPHS:-1}
PROFILE=${PROFILE:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:benchmarks/stubs
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
graphs=""
[ "$GRAPHS" = 1 ] && graphs="--cuda-graphs"
{
    echo "== gpu_check"
    timeout 150 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json"
    if [ "$PROFILE" = 1 ]; then
        echo "== gpu_profile"
        timeout 60 python3 benchmarks/gpu_profile.py --out "$OUT/gpu_profile.txt"
    fi
    echo "== gpu_throughput"
    timeout $((DEADLINE + EVOTORCH + 90)) python3 benchmarks/gpu_throughput.py --tf32 $graphs \
        --generations 3 --row-seconds 0.5 --deadline "$DEADLINE" --evotorch-seconds "$EVOTORCH" \
        --out "$OUT/gpu_throughput.json" 2>&1 | grep -v "INFO\|UserWarning\|result = torch.tensor"
    if [ "$COMPILE" -gt 0 ]; then
        echo "== torch.compile, small rows"
        timeout "$COMPILE" python3 benchmarks/gpu_throughput.py --dims 1000 --pops 100 \
            --structures diagonal lowrank16 dense --dtypes float32 --compile --no-evotorch \
            --generations 3 --row-seconds 0.5 --out "$OUT/gpu_compile.json" 2>"$OUT/compile_stderr.txt"
    fi
} 2>&1 | tee "$OUT/log.txt"
