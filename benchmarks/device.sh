#!/usr/bin/env bash
# Benchmark runs on a lent GPU machine without network (the team's `run` device tool): wheels and the shared
# assets travel as git-ignored folders of at most ~60 MB each, one per call, and the jobs below run on the device.
#
#   here:        bash benchmarks/device.sh prepare          # .whl/, .carry1-3/ and .carry5/ (model + data, no unused clips)
#   device call: bash benchmarks/device.sh 1 COMMIT         # carry [".whl", ".carry1"]: installs, copies the repo
#                (with torchao: carry [".whl", ".carry4"], then `bash /tmp/device.sh part 1` with carry [".carry1"])
#   device call: bash /tmp/device.sh part 2                 # carry [".carry2"]
#   device call: bash /tmp/device.sh part 3                 # carry [".carry3"]
#   device call: bash /tmp/device.sh part 5 && bash /tmp/device.sh unpack   # carry [".carry5"]: starts JOBS
#   (a speed job needs no assets: `bash benchmarks/device.sh 1 COMMIT && bash /tmp/device.sh start 0` starts it at once)
#   device call: bash /tmp/device.sh wait 540               # until the jobs end or ~540 s; /tmp/res + logs into $OUT/res.tgz
# To stop a running job early: `pkill -f '^python3 -m benchmarks'; touch /tmp/jobN.done` (a pattern that matches the
# job's python only: `pkill -f benchmarks.speed` also kills the job's wrapper, so jobs AFTER it never start, and the
# calling shell, so the call returns nothing). Keep the calls back to back: the machine is given back after 30 s idle. Edit JOBS and AFTER for each session;
# the device copy's git metadata can be stale, so pass COMMIT and correct the reports' commit by hand.
set -u
export PYTHONPATH=/tmp/site:/tmp/repo HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export BENCHMARK_COMMIT=$(cat /tmp/commit 2>/dev/null)  # the reports' commit (benchmarks.commit)
M=/tmp/assets/models/whisper-base D=/tmp/assets/data
QUALITY="python3 -m benchmarks.quality --model $M --data-dir $D"
# One line per background job; each writes its reports under /tmp/res and starts once the jobs named in its AFTER
# entry are done. A --reuse report keeps only the configs named in --configs: name every row the report should go on
# holding. 16 training processes at once fill the 16-core H200 host (2026-12-02: an int8 run of 300 steps took
# 390-510 s at 10 at once, an unquantized one 75 s; 2026-12-03, unquantized at 15-16 at once: 160-180 s for 300
# steps, ~435 s for 900; 2026-12-06, H100 host, 6 bf16 runs at batch 20 and 6 nf4 at batch 6 at once: under 8 min with
# their scoring). When no machine is lent the tool names a wait; each call before it ends costs 15 s.
# A speed run needs the GPU to itself: run it first, or AFTER every other job (each mode's row is written as it finishes; 2026-12-03's
# three modes and the recipe took 5.7 min). Where machine starts keep failing (each costs 1.5-3 min of the session's
# device time), run the WER jobs first and the speed job after them (AFTER): a lost speed run costs less.
# benchmarks/tta.py's job (every run of its RUNS, both tasks, 3 seeds, 14 at once: results/tta.md, 2026-12-07) ran
# ~12 minutes on an H100 with its scoring; the dev splits it validates on travel (`prepare` keeps their clips).
# JOBS now: issue 50's levers against forgetting and hallucination: the recipe config on the unquantized base (the
# device session was short after failed starts; int8 trains ~6x slower on whisper-base) without and with replay,
# no-speech and both, 3 seeds, on cv-synth/mr, every adapter also scored on cv-synth/en and on generated non-speech clips. The previous job (issue 45's equal-data check, 48 unquantized runs) took 22 min on an H100.
ADAPTER=/tmp/qa/TASK/packed-all-bf16/seed7/adapters/last  # ct2-check's adapters (2026-12-04, first session)
trained() { for t in "$@"; do printf 'while [ ! -f /tmp/qa/%s/fit.json ]; do sleep 10; done; ' "$t"; done; }
JOBS=(
  "$QUALITY --tasks cv-synth-mr --baseline recipe-config --configs recipe-config replay no-speech --override=--model.quantization=none --jobs 9 --work /tmp/qf --results /tmp/res --name quality-forgetting"
)
AFTER=("")
# Reports of what the quality jobs still running have finished so far (run by `wait`).
COLLECT=("${JOBS[@]/%/ --collect --results /tmp/res/collect}")

status() {
  date; uptime; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  for i in "${!JOBS[@]}"; do
    echo "job $i: $( [ -f /tmp/job$i.done ] && echo done || { [ -f /tmp/job$i.started ] && echo running || echo waiting; })"
    tail -2 /tmp/job$i.log 2>/dev/null
  done
  # Each training run's progress: TensorBoard logs train/loss every 25 steps (the recipe's log_every_n_steps).
  for run in /tmp/q*/*/*/seed* /tmp/tta/*/*/seed*; do
    [ -d "$run" ] && echo "$run: $(cat "$run"/*/version_*/events.* 2>/dev/null | grep -ao train/loss | wc -l) losses logged, $(cat "$run"/trajectory.jsonl 2>/dev/null | wc -l) validations$([ -f "$run/fit.json" ] && echo ', done')"
  done
}

collect() {
  cd /tmp/repo || return
  # All at once and time-boxed: `wait` keeps 100 s for this and the tarball, within the call's limit.
  for i in "${!JOBS[@]}"; do
    [ -f /tmp/job$i.started ] && [ ! -f /tmp/job$i.done ] && [[ "${JOBS[$i]}" =~ benchmarks\.(quality|tta) ]] &&
      [[ "${JOBS[$i]}" != *--collect* ]] && { timeout 80 ${COLLECT[$i]} > /tmp/collect$i.log 2>&1 & }
  done
  wait
  mkdir -p /tmp/logs /tmp/res && cp /tmp/job*.log /tmp/collect*.log /tmp/logs/ 2>/dev/null
  for f in $(grep -l "Traceback" /tmp/q*/*/*/seed*/fit.log 2>/dev/null); do cp "$f" "/tmp/logs/$(echo "$f" | tr / _)"; done
  tar -C /tmp -czf "$OUT/res.tgz" res logs && ls -la "$OUT"
}

start() {  # launch the jobs numbered "$@" in the background, each once
  cd /tmp/repo || exit 1
  for i in "$@"; do
    [ -f /tmp/job$i.launched ] && continue
    touch /tmp/job$i.launched
    wait_for=$(for j in ${AFTER[$i]}; do printf 'while [ ! -f /tmp/job%s.done ]; do sleep 10; done; ' "$j"; done)
    setsid nohup bash -c "$wait_for touch /tmp/job$i.started; { ${JOBS[$i]}; } > /tmp/job$i.log 2>&1; touch /tmp/job$i.done" > /dev/null 2>&1 &
  done
}

case ${1:-} in
prepare)
  ../shared/device/make-wheelhouse.sh peft==0.21.2 > /dev/null  # the peft the tests run (LoRA+, rsLoRA)
  # torchao (model.speed.fp8) travels with .whl in the first call, the first payload part in a call of its own:
  # together they would pass the 64 MiB a call carries.
  mkdir -p .carry4 && .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 -d .carry4 torchao==0.18.0
  rm -rf /tmp/assets && mkdir -p /tmp/assets/models /tmp/assets/data/cv-synth /tmp/assets/data/real/fsdd-takes5-49
  cp -r ../shared/models/whisper-base /tmp/assets/models/
  cp -r ../shared/data/cv-synth/mr ../shared/data/cv-synth/en /tmp/assets/data/cv-synth/
  cp -r ../shared/data/real/fsdd-takes5-49/en /tmp/assets/data/real/fsdd-takes5-49/
  # The harnesses train on train, validate on dev (tta.py) and score test (cv-synth/en: test only); clips of no split
  # (validated-only, invalidated, other) stay home too.
  for d in cv-synth/mr:train,dev,test cv-synth/en:test real/fsdd-takes5-49/en:train,dev,test; do
    dir=/tmp/assets/data/${d%%:*}
    for f in $(echo "${d##*:}" | tr , ' '); do tail -n +2 "$dir/$f.tsv" | cut -f2; done | sort > /tmp/keep
    ls "$dir/clips" | sort | comm -23 - /tmp/keep | while read -r p; do rm -f "$dir/clips/$p"; done
  done
  tar -C /tmp -cf - assets | gzip -9 > /tmp/payload.tgz
  rm -rf .carry1 .carry2 .carry3 .carry5 && mkdir -p .carry1 .carry2 .carry3 .carry5
  # Part 0 beside .whl (11 MB), the rest in three: every call also carries the repo (~6.4 MB) within its 64 MiB
  # (two halves of ~60.6 MB were refused on 2026-12-07 once the repo had grown).
  head -c 49000000 /tmp/payload.tgz > .carry1/payload.part00
  tail -c +49000001 /tmp/payload.tgz | split -b 40500000 -d -a 2 --numeric-suffixes=1 - /tmp/payload.part
  mv /tmp/payload.part01 .carry2/ && mv /tmp/payload.part02 .carry3/ && mv /tmp/payload.part03 .carry5/ || exit 1
  [ ! -e /tmp/payload.part04 ] || { echo "payload over 4 parts: add a carry"; exit 1; }
  ls -la .carry1 .carry2 .carry3 .carry4 .carry5 ;;
1) python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
     $(ls .carry4/*.whl 2>/dev/null) || exit 1
   rm -rf /tmp/repo && mkdir -p /tmp/repo && tar --exclude=./.whl --exclude='./.carry*' -cf - . | tar -C /tmp/repo -xf -
   echo "${2:-unknown}" > /tmp/commit; cp benchmarks/device.sh /tmp/device.sh
   rm -f /tmp/payload.part*; [ -f .carry1/payload.part00 ] && cp .carry1/payload.part00 /tmp/
   nvidia-smi --query-gpu=name,memory.total --format=csv; nproc
   python3 -c "import bitsandbytes, jsonargparse, soundfile, soxr, jiwer, datasets, lightning_asr.cli; print('imports ok')" ;;
part) cp ".carry$2"/payload.part* /tmp/ && ls -la /tmp/payload.part* ;;  # one carried part of the payload
unpack) [ "$(ls /tmp/payload.part* | wc -l)" = 4 ] || { echo "payload parts missing: $(ls /tmp/payload.part*)"; exit 1; }
   cat /tmp/payload.part* | tar -C /tmp -xzf - && rm -f /tmp/payload.part* || exit 1
   start "${!JOBS[@]}"; sleep 20; status ;;
start) shift; start "$@" ;;  # device: these jobs now, before the assets are here (speed runs need none)
wait) end=$((SECONDS + ${2:-540} - 100))
   # until every job launched so far is done (a speed job started alone ends the wait by itself)
   while [ $SECONDS -lt $end ] && [ "$(ls /tmp/job*.done 2>/dev/null | wc -l)" -lt "$(ls /tmp/job*.launched 2>/dev/null | wc -l)" ]; do sleep 15; done
   status; collect ;;
collect) collect ;;
prepare-ct2)  # here: the GPU runtime of faster-whisper as ~59 MB parts, one carry each
  rm -rf /tmp/ct2w .carry-ct2-* && mkdir -p /tmp/ct2w
  .venv/bin/python -m pip download -q --no-deps -d /tmp/ct2w --python-version 3.12 --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    ctranslate2==4.8.5 faster-whisper==1.2.1 av==18.1.0 nvidia-cublas-cu12==12.9.1.4 || exit 1
  tar -C /tmp/ct2w -cf - . | split -b 59000000 -d -a 2 - /tmp/ct2.part
  for f in /tmp/ct2.part*; do mkdir -p ".carry-ct2-${f##*part}" && mv "$f" ".carry-ct2-${f##*part}/part"; done
  ls -d .carry-ct2-* | tr '\n' ' '; echo "($(ls -d .carry-ct2-* | wc -l) ct2part calls)" ;;
ct2part)  # device: one part; `last` marks the set complete
  cp ".carry-ct2-$2/part" "/tmp/ct2.part$2" || exit 1
  [ "${3:-}" = last ] && touch /tmp/ct2.ready; ls /tmp/ct2.part* | wc -l ;;
ct2-check)  # device job: once every part is here and the packed adapters are trained, install and check
  while [ ! -f /tmp/ct2.ready ]; do sleep 5; done
  mkdir -p /tmp/ct2w && cat /tmp/ct2.part* | tar -C /tmp/ct2w -xf - && rm -f /tmp/ct2.part* &&
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-ct2 /tmp/ct2w/*.whl || exit 1
  cd /tmp/repo && PYTHONPATH=/tmp/site-ct2:$PYTHONPATH LD_LIBRARY_PATH=/tmp/site-ct2/nvidia/cublas/lib \
    python3 -m benchmarks.export_parity --formats ct2-int8_float16 ct2-float16 --model $M --data-dir $D \
    --adapter fsdd-en=${ADAPTER/TASK/fsdd-en} --adapter cv-synth-mr=${ADAPTER/TASK/cv-synth-mr} --work /tmp/ex \
    --results /tmp/res --name export-gpu-ct2-padded ;;
*) sed -n 2,12p "$0"; exit 2 ;;
esac
