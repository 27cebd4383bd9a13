#!/usr/bin/env bash
# GPU check: the tiny profile on a GPU, with throughput figures. No network needed (micro models are
# built here). Goal: under 8 minutes on one H100. Record the printed figures in docs/performance.md.
#   make setup && scripts/gpu_check.sh            # cuda
#   scripts/gpu_check.sh cpu                      # the same steps on CPU (a smoke test of the script)
# Steps: micro models (CPU, as always) -> in-process generation on the device -> generation through a
# managed `transformers serve --device <device> --continuous-batching` -> DPO steps in bf16 -> figures.
set -euo pipefail
DEVICE=${1:-cuda}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/.venv/bin
WORK=${WORK:-$(mktemp -d /tmp/deltalab-gpu-check.XXXX)}
export PATH=$BIN:$PATH HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=4
mkdir -p "$WORK" && cd "$WORK"
echo "gpu_check: device $DEVICE, work dir $WORK"
"$BIN/python" - "$ROOT/tests/tiny/params.yaml" "$DEVICE" <<'PY'
import sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
device = sys.argv[2]
data["runtime"] |= {"device": device, "threads": 4}
data["runtime"]["generate"] = {"batch_size": 256, "concurrency": 64}
# More prompts than the tests use, so throughput is measured on a real batch.
data["prompts"]["train"] = {k: 512 for k in data["prompts"]["train"]}
cont = "--continuous-batching" if device.startswith("cuda") else ""
data["generators"]["served"] = {
    "micro_model": "strong", "backend": "openai", "n": 4, "greedy": False,
    "serve": {"command": f"transformers serve {{model}} --host {{host}} --port {{port}} --device {device} {cont}",
              "startup_timeout_s": 300},
}
data["ablations"] = {"delta": data["ablations"]["delta"]}
data["train"] |= {"seeds": [0], "epochs": 1}
yaml.safe_dump(data, open("params.yaml", "w"))
PY
t() { local s=$EPOCHREALTIME; "$@" >/dev/null; awk "BEGIN {print $EPOCHREALTIME - $s}"; }
deltalab prompts --metrics metrics/prompts.json >/dev/null
for m in weak strong student; do
  deltalab micro-models $m --exclude data/prompts/eval_id.parquet --exclude data/prompts/eval_ood.parquet >/dev/null
done
"$BIN/python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
gen_s=$(t deltalab generate strong)
serve_s=$(t deltalab generate served)
deltalab generate weak >/dev/null
deltalab generator-metrics >/dev/null
deltalab judge >/dev/null
deltalab pairs delta >/dev/null
train_s=$(ACCELERATE_MIXED_PRECISION=bf16 t deltalab train delta)
"$BIN/python" - "$gen_s" "$serve_s" "$train_s" <<'PY'
import json, sys, polars as pl
gen_s, serve_s, train_s = map(float, sys.argv[1:])
strong = pl.read_parquet("data/traces/strong.parquet").height + pl.read_parquet("data/traces/strong.greedy.parquet").height
served = pl.read_parquet("data/traces/served.parquet")
tokens = int(served["completion_tokens"].sum())
train = json.loads(open("data/checkpoints/delta/train.json").read())
steps = sum(s["steps"] for s in train["seeds"].values())
print("gpu_check figures (stage wall time includes process start and model load):")
print(f"  in-process generation : {strong} traces in {gen_s:.1f} s = {strong / gen_s:.1f} traces/s")
print(f"  transformers serve    : {served.height} traces, {tokens} tokens in {serve_s:.1f} s = "
      f"{served.height / serve_s:.1f} traces/s, {tokens / serve_s:.0f} tokens/s (incl. server start)")
print(f"  DPO training          : {train_s:.1f} s for the `delta` ablation, {steps} optimizer steps")
PY
echo "gpu_check: done in $SECONDS s"
