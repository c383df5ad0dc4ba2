#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/*-2026-11-25*, one call each, as the device README says: wheels
# carried in .whl, results under $OUT. speed/ddp/rest ran on two-H100 machines (device kind nvidia-h100-x2),
# run4a/b/c on one-H100 machines (nvidia-h100-x1).
#   bash benchmarks/gpu_session.sh speed COMMIT   # speed.py split over the two GPUs, then merged
#   bash benchmarks/gpu_session.sh ddp COMMIT     # ddp.py, 1 vs 2 GPUs, grouped and random batches
#   bash benchmarks/gpu_session.sh rest COMMIT    # 1,000-clip decode, nf4 batch 24 alone, DDP random batches
#   bash benchmarks/gpu_session.sh run4a COMMIT   # one H100 (nvidia-h100-x1), one process: recipe and the bf16 modes
#   bash benchmarks/gpu_session.sh run4b COMMIT   # the same machine, next call: int8/nf4 modes and the 1,000-clip decodes
#   bash benchmarks/gpu_session.sh run4c COMMIT   # another H100: recipe and bf16-b16-compile again, merged vs unmerged decodes
#   bash benchmarks/gpu_session.sh run5 COMMIT    # goal 1's mode, fresh process each; its "no cuDNN" half reused the first
#                                                 # half's compiled graphs (inductor's disk cache), cuDNN kernels included
#   bash benchmarks/gpu_session.sh run6 COMMIT    # not yet run: compiled bf16 with untrimmed 30 s windows (default numerics)
#   bash benchmarks/gpu_session.sh run7a COMMIT   # training with model.cudnn_attention off (the new default) and on
#   bash benchmarks/gpu_session.sh run7b COMMIT   # the same machine: static decoding against generate()
#   bash benchmarks/gpu_session.sh run7c COMMIT   # compiled b128 first in its process; decodes timed over the loop alone
#   bash benchmarks/gpu_session.sh run8 COMMIT    # decodes after data.log_mel; fast-bf16 and lean-bf16 as configured
#   bash benchmarks/gpu_session.sh run9 COMMIT    # decodes after collate trims before stacking; k-bit bases, static against generate()
#   bash benchmarks/gpu_session.sh run10 COMMIT   # validation memory at the memory-bound configs' batch sizes; the recipe and the nf4 modes as configured
#   bash benchmarks/gpu_session.sh run11 COMMIT   # (nvidia-h100-x2) fast-bf16's compiled mode under DDP, 1 vs 2 GPUs; validation of 1,000 clips on 1 vs 2
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
case "$1" in
speed)
  CUDA_VISIBLE_DEVICES=0 timeout 540 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/gpu0" --decode \
    --modes ours-recipe nf4-trim-gc-b8 nf4-trim-gc-b24 nf4-trim-gc-b32 >"$OUT/gpu0.log" 2>&1 &
  CUDA_VISIBLE_DEVICES=1 timeout 540 python3 benchmarks/speed.py --commit "$2" --work /tmp/s1 --results "$OUT/gpu1" --skip-recipe \
    --modes bf16-trim-gc-b64-ungrouped bf16-trim-gc-b64 bf16-trim-gc-b128 >"$OUT/gpu1.log" 2>&1
  wait
  python3 benchmarks/speed.py --merge "$OUT"/gpu0/speed-*.json "$OUT"/gpu1/speed-*.json --results "$OUT"
  ;;
ddp)
  for mode in bf16-trim-gc-b64 bf16-trim-gc-b64-ungrouped; do
    for devices in 1 2; do
      timeout 200 python3 benchmarks/ddp.py --mode $mode --devices $devices --work /tmp/ddp >>"$OUT/ddp.log" 2>&1
    done
  done
  python3 benchmarks/ddp.py --report --work /tmp/ddp --results "$OUT"
  ;;
esac
# Third call: decoding 1,000 clips, the smallest-memory nf4 mode alone (host profile), DDP with random batches.
if [ "$1" = rest ]; then
  timeout 200 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/decode" --skip-recipe --modes --decode bf16 >"$OUT/decode.log" 2>&1
  timeout 120 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/nf4" --skip-recipe --modes nf4-trim-gc-b24 --decode >"$OUT/nf4.log" 2>&1
  for devices in 1 2; do
    timeout 120 python3 benchmarks/ddp.py --mode bf16-trim-gc-b64-ungrouped --devices $devices --work /tmp/ddp >>"$OUT/ddp.log" 2>&1
  done
  cp /tmp/ddp/runs.jsonl "$OUT/ddp-runs.jsonl"
fi
# Run 4 (issue 7): one process on one GPU, so no mode shares the host; two calls on the same machine,
# merged into one report. Each mode is written out as soon as it finishes.
if [ "$1" = run4a ]; then
  timeout 570 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run4a" --decode \
    --modes bf16-trim-gc-b128-compile bf16-trim-gc-b16 bf16-trim-gc-b16-compile bf16-trim-gc-b128 >"$OUT/run4a.log" 2>&1
fi
if [ "$1" = run4b ]; then  # no recipe here: its ratios use run4a's recipe, same machine
  timeout 570 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run4b" --skip-recipe \
    --decode bf16-merged-b512 bf16-merged-b256 bf16 \
    --modes ours-recipe ours-recipe-tf32 nf4-trim-gc-b8 nf4-trim-gc-b24 >"$OUT/run4b.log" 2>&1
fi
if [ "$1" = run4c ]; then  # run4b ran out of time before its unmerged decode; a second machine for goal 1's margin
  timeout 550 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run4c" \
    --decode bf16 bf16-merged-b128 bf16-merged-b256 --modes bf16-trim-gc-b16-compile >"$OUT/run4c.log" 2>&1
fi
if [ "$1" = run5 ]; then  # each mode in its own process (as run at a85cbc6; its second mode is gone since)
  for mode in bf16-trim-gc-b16-compile bf16-trim-gc-b16-compile-no-cudnn-attention; do
    timeout 280 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run5-$mode" --decode \
      --modes $mode >>"$OUT/run5.log" 2>&1
  done
fi
if [ "$1" = run6 ]; then
  timeout 560 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run6" --decode \
    --modes bf16-gc-b32-compile >"$OUT/run6.log" 2>&1
fi
# Run 7: each process gets its own empty inductor cache, so none reuses graphs compiled with another
# attention choice (inductor's cache key does not include it: run 5 reused cuDNN graphs that way).
if [ "$1" = run7a ]; then
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind7a timeout 330 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 \
    --results "$OUT/run7a" --decode --modes bf16-trim-gc-b16-compile bf16-trim-gc-b128-compile >"$OUT/run7a.log" 2>&1
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind7a-cudnn timeout 200 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 \
    --results "$OUT/run7a-cudnn" --skip-recipe --decode --modes bf16-trim-gc-b16-compile-cudnn-attention >>"$OUT/run7a.log" 2>&1
fi
if [ "$1" = run7b ]; then
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_decode.py >"$OUT/pytest-decode.log" 2>&1
  tail -3 "$OUT/pytest-decode.log"
  timeout 500 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run7b" --skip-recipe --modes \
    --decode bf16-static-b256 bf16-static-merged-b256 bf16-static-b512 bf16-static-b256-untrimmed \
    bf16-merged-b256 >"$OUT/run7b.log" 2>&1
fi
if [ "$1" = run7c ]; then  # run7a's compiled b128 ran after the b16 mode in its process; here it runs first.
  # Then decoding timed over the validation loop alone (run 7b timed whole validate() calls).
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind7c timeout 200 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 \
    --results "$OUT/run7c" --skip-recipe --decode --modes bf16-trim-gc-b128-compile >"$OUT/run7c.log" 2>&1
  timeout 250 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run7c-decode" --skip-recipe \
    --modes --decode bf16-static-b256 bf16-static-merged-b256 bf16-merged-b256 >>"$OUT/run7c.log" 2>&1
fi
if [ "$1" = run8 ]; then  # goal 4 again after data.log_mel (a 256-clip batch built 3.7x faster on the CI CPU), with
  # each batch's data wait and a steady-state (second batch) profile; then the bf16 training modes with the recipe in one process
  timeout 290 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run8-decode" --skip-recipe \
    --modes --decode bf16-static-merged-b256 bf16-static-b256 bf16-static-b128 >"$OUT/run8.log" 2>&1
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind8 timeout 270 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 \
    --results "$OUT/run8" --decode --modes bf16-trim-gc-b128-compile-cudnn-attention bf16-trim-gc-b16-compile >>"$OUT/run8.log" 2>&1
fi
if [ "$1" = run9 ]; then  # goal 4 after collate trims before it stacks (256 clips: 0.2-0.6 s in a worker's fresh memory -> 0.02 s, CI CPU);
  # then one batch each on the int8 and nf4 bases, generate() against static decoding (no CUDA graphs there)
  timeout 280 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run9-decode" --skip-recipe --modes \
    --decode bf16-static-merged-b256 bf16-static-b256 bf16-static-merged-b128 bf16-static-b128 >"$OUT/run9.log" 2>&1
  timeout 260 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run9-kbit" --skip-recipe --modes \
    --decode int8-b64 int8-static-b64 nf4-b64 nf4-static-b64 >>"$OUT/run9.log" 2>&1
fi
if [ "$1" = run10 ]; then  # validation peaks at small batches (256 bf16 clips; k-bit: one batch), then the recipe and
  # the nf4 configs' training modes in one process, cuDNN attention off as the configs have it (run 4 had it on)
  timeout 240 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run10-decode" --skip-recipe --modes \
    --decode-clips 256 --decode bf16-static-b16 bf16-static-b32 nf4-static-b8 nf4-static-b16 >"$OUT/run10.log" 2>&1
  timeout 300 python3 benchmarks/speed.py --commit "$2" --work /tmp/s0 --results "$OUT/run10" --decode \
    --modes nf4-trim-gc-b8 nf4-trim-gc-b24 >>"$OUT/run10.log" 2>&1
fi
if [ "$1" = run11 ]; then  # two GPUs: compiled layers under DDP (never run on a GPU before), and DDP validation
  export TORCHINDUCTOR_CACHE_DIR=/tmp/ind11
  for devices in 1 2; do
    timeout 170 python3 benchmarks/ddp.py --mode bf16-trim-gc-b128-compile-cudnn-attention --devices $devices --work /tmp/ddp >>"$OUT/run11.log" 2>&1
  done
  for devices in 1 2; do
    timeout 100 python3 benchmarks/ddp.py --mode bf16-trim-gc-b128 --validate-clips 1000 --eval-batch 128 --devices $devices \
      --work /tmp/ddp >>"$OUT/run11.log" 2>&1
  done
  python3 benchmarks/ddp.py --report --work /tmp/ddp --results "$OUT/run11"
fi
