#!/bin/bash
# One prepared GPU session (the device tool's machine, or any CUDA machine with torch but not kdlab's other
# dependencies): install the wheels carried in .whl/ (pydantic, torchattacks, pytest: the device image lacks them),
# then run the GPU benchmark, the CUDA tests and a short CUDA training run. Everything lands in $OUT (default out/).
# Used as: run(command="bash benchmarks/gpu_session.sh", carry=[".whl"]).
OUT=${OUT:-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())'; } > "$OUT/device.txt" 2>&1
timeout 280 python3 benchmarks/gpu_throughput.py --out "$OUT/gpu_throughput.csv" > "$OUT/bench.log" 2>&1
echo "benchmark rc=$?" >> "$OUT/bench.log"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_speed.py tests/gpu/test_distributed_gpu.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"
timeout 80 python3 -c 'from kdlab.cli import app; app()' train quickstart_teacher --set device=cuda \
  --set train.precision=bf16 --set train.epochs=2 --set eval.n=500 > "$OUT/train.log" 2>&1
echo "train rc=$?" >> "$OUT/train.log"
tail -c 3000 "$OUT/bench.log"; tail -5 "$OUT/gpu_tests.log"; tail -5 "$OUT/train.log"
