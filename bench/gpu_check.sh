#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short run (a lent GPU machine is held by the minute):
#   1. tests/test_cuda.py: CUDA graphs against the eager step, a training job on the GPU;
#   2. the README's demo through Snakemake, GPU jobs sharing the one GPU (--resources gpu=$GPU_JOBS);
#   3. bench/throughput.py on the GPU (short loops; THROUGHPUT_CONFIGS: size:alpha pairs), and the
#      model zoo's architectures (MODEL_CONFIGS: name:encoder:size triples), with and without
#      gradient checkpointing;
#   4. the rest of the fast tests with CUDA present, in the time that is left.
# Usage: OUT=<dir> bash bench/gpu_check.sh  (where Python packages are missing, put their wheels
# in .whl/: they are installed to /tmp/site first). Logs and tables land in $OUT.
set -u
OUT=${OUT:-results/gpu_check}
GPU_JOBS=${GPU_JOBS:-4}
mkdir -p "$OUT"
python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || { echo "gpu_check.sh: torch sees no CUDA GPU here" >&2; exit 2; }
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
command -v python >/dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v python3)" /tmp/bin/python && export PATH=/tmp/bin:$PATH; }
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, zarr, snakemake; print('torch', torch.__version__, torch.cuda.get_device_name(), 'zarr', zarr.__version__, 'snakemake', snakemake.__version__)"
nproc
start=$(date +%s)
step() { echo "=== $1 ($(( $(date +%s) - start )) s)"; }

step "1. CUDA tests"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -15

step "2. demo"
rm -rf results/demo results/logs/demo results/benchmarks/demo
t0=$(date +%s)
timeout "${DEMO_LIMIT:-200}" python3 -m snakemake results/demo/gen3/metrics.csv --cores all --resources gpu="$GPU_JOBS" \
    > "$OUT/demo.log" 2>&1
echo "demo: exit $?, $(( $(date +%s) - t0 )) s"
python3 bench/generations.py demo --summarize-only
python3 -c "import torch; print(torch.load('results/demo/gen0/models/m0/model.pt', weights_only=True)['numeric_path'])"
tar czf "$OUT/demo_results.tgz" results/demo/*/metrics.csv results/benchmarks/demo results/logs/demo 2>/dev/null
grep -h "steps of batch\|best val" results/logs/demo/gen0/train_m0.log results/logs/demo/gen1/train_m0.log 2>/dev/null

step "3. throughput"
mkdir -p /tmp/tp
for config in ${THROUGHPUT_CONFIGS:-32:0.5 256:1}; do
    size=${config%:*} alpha=${config#*:}
    timeout "${THROUGHPUT_LIMIT:-80}" python3 bench/throughput.py --sizes "$size" --alphas "$alpha" \
        --seconds "${SECONDS_PER_LOOP:-0.6}" --rounds 3 --out "/tmp/tp/throughput_gpu_${size}_$alpha" 2>&1 | grep -v "^|"
done
for config in ${MODEL_CONFIGS:-unet:resnet18:256 deeplabv3plus:resnet50:256 dpt:tu-vit_small_patch14_dinov2:224}; do
    IFS=: read -r name encoder size <<< "$config"
    for gc in "" "--gradient-checkpointing"; do
        timeout "${THROUGHPUT_LIMIT:-80}" python3 bench/throughput.py --model "$name" --encoder "$encoder" --sizes "$size" \
            --seconds "${SECONDS_PER_LOOP:-0.6}" --rounds 3 $gc --out "/tmp/tp/models_gpu_${name}_${size}${gc:+_gc}" 2>&1 | grep -v "^|"
    done
done
tar czf "$OUT/throughput_gpu.tgz" -C /tmp tp

step "4. the other fast tests, with CUDA present"
timeout "${REST_LIMIT:-70}" python3 -m pytest -v --tb=short -rf -p no:cacheprovider -m "not slow" \
    --ignore=tests/test_cuda.py > "$OUT/tests_fast.log" 2>&1
grep -E "FAILED|ERROR|passed|failed" "$OUT/tests_fast.log" | tail -8
step "done"
