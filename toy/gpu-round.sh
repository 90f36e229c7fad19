#!/usr/bin/env bash
# One round on a lent GPU, in one call (toy/README.md): the base trains on for BASE_MINUTES on
# clips made on the fly, then the three adapters (PickStyle and both ablations) are carried over
# to it side by side: each starts from its bundled weights and trains ADAPTER_STEPS more (stopped
# after ADAPTER_SECONDS, its latest checkpoint kept, so that the results come back in time). The
# results come back as $OUT/round.tar.* (15 MB parts: `cat round.tar.* | tar -x` in the
# repository root restores toy/work/base/model, the adapters and their logs).
#   OUT=/tmp/out bash toy/gpu-round.sh                                   # on the GPU machine
#   OUT=/tmp/out DEVICE=cpu BATCH=2 WORKERS=2 BASE_MINUTES=0.2 ADAPTER_STEPS=3 bash toy/gpu-round.sh   # dry run here
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-64} WORKERS=${WORKERS:-12}
BASE_MINUTES=${BASE_MINUTES:-5} ADAPTER_STEPS=${ADAPTER_STEPS:-2000} ADAPTER_LR=${ADAPTER_LR:-2e-4}
if [ -d .whl ]; then  # packages the GPU machine lacks, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 toy/build.py base --device "$DEVICE" --online --batch "$BATCH" --decay --minutes "$BASE_MINUTES" --workers "$WORKERS"
python3 toy/build.py pairs
pids=()
for variant in pickstyle no-motion main-qkv; do
  timeout "${ADAPTER_SECONDS:-230}" python3 toy/build.py adapter --variant "$variant" --device "$DEVICE" --steps "$ADAPTER_STEPS" --lr "$ADAPTER_LR" \
    --from-bundle >"$OUT/adapter-$variant.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
tar -cf - --exclude=optimizer.pt toy/work/base/model toy/work/base/state.json toy/work/base/train.log toy/work/adapters/*/adapter \
  toy/work/adapters/*/checkpoints toy/work/adapters/*/train.log | split -b 15M - "$OUT/round.tar."
ls -la "$OUT"
exit $failed
