#!/usr/bin/env bash
# Tutorial 01 on one machine: the same charts and values files as in the cluster, run by `llmft local`.
# `make demo` runs this script. Every step prints the command it runs; the cluster equivalent of each is
# in docs/tutorials/tutorial-01-deliver-model-and-data-then-finetune.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
# The demo keeps its state (embedded S3 data, run folders) in ./.demo, not in your home folder.
export LLMFT_STATE_DIR="${LLMFT_STATE_DIR:-$PWD/.demo/state}"
export LLMFT_PROGRESS_INTERVAL="${LLMFT_PROGRESS_INTERVAL:-5}"
# No BUCKET_STORAGE_HOST: `llmft local` starts the embedded S3 server (SeaweedFS on 127.0.0.1).
unset BUCKET_STORAGE_HOST BUCKET_STORAGE_ACCESS_KEY BUCKET_STORAGE_SECRET_KEY
run_id="${RUN_ID:-$(date +%H%M%S)}"
port="${DEMO_PORT:-8080}"

# curl when present (as in the tutorial), else the same requests from Python.
http() {
  if command -v curl >/dev/null; then curl -sf "$@"; else
    python3 - "$@" <<'PY'
import sys, urllib.request
args = sys.argv[1:]
url = next(a for a in args if a.startswith("http"))
data = args[args.index("-d") + 1].encode() if "-d" in args else None
request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
sys.stdout.write(urllib.request.urlopen(request, timeout=120).read().decode())
PY
  fi
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "The embedded S3 server; its endpoint and credentials also serve the llmft commands of this shell"
show llmft local s3 start
eval "$(llmft local s3 env)"

step "0. A tiny model to stand in for TinyLlama (random weights, real tokenizer and chat template)"
show llmft tiny-model ./.demo/tiny-model

step "1. Deliver the model and a data set to the bucket (the two staging charts)"
show llmft local charts/download-model-to-bucket \
  --values overrides/download-model-to-bucket/tiny-random-model-to-minio.yaml \
  --name-template "deliver-tiny-model"
show llmft local charts/download-data-to-bucket \
  --values overrides/download-data-to-bucket/tiny-synthetic-to-minio.yaml \
  --name-template "deliver-synthetic-data"

step "2. A LoRA rank sweep: one run per rank, like the tutorial's loop of parallel Jobs"
for r in 4 8 16; do
  name="tiny-sweep-$run_id-$r"
  show llmft local charts/llm-finetune \
    --values overrides/llm-finetune/tiny-model-lora.yaml \
    --name-template "$name" \
    --set finetuning_config.peft_conf.peft_kwargs.r=$r \
    --set "checkpointsRemote=default-bucket/experiments/$name"
done

step "3. Full-parameter training, interrupted once on purpose, then relaunched: it resumes from the bucket"
name="tiny-full-$run_id"
# A longer run than the override's 40 steps, so there is time to interrupt it after its first upload.
full_run=(llmft local charts/llm-finetune --values overrides/llm-finetune/tiny-model-full-param.yaml
          --name-template "$name" --set "checkpointsRemote=default-bucket/experiments/$name"
          --set finetuning_config.training_args.max_steps=300 --set finetuning_config.training_args.save_steps=50
          --set finetuning_config.training_args.eval_steps=100 --set finetuning_config.training_args.logging_steps=25)
echo "\$ ${full_run[*]} &"
"${full_run[@]}" &
runner=$!
# (grep reads the whole listing: with pipefail, `grep -q` stopping early would fail the pipeline)
until llmft storage ls "default-bucket/experiments/$name" 2>/dev/null | grep "checkpoint-[0-9]*/  \[complete\]" >/dev/null; do
  kill -0 "$runner" 2>/dev/null || { echo "the run ended before its first checkpoint was uploaded"; exit 1; }
  sleep 1
done
echo "A checkpoint is complete in the bucket; stopping the run as if its pod were evicted:"
show llmft storage ls "default-bucket/experiments/$name"
kill -TERM "$runner"; wait "$runner" || true
if llmft storage ls "default-bucket/experiments/$name" | grep "fine-tuning run is complete" >/dev/null; then
  echo "(This machine finished the run before it could be interrupted: the relaunch finds it complete.)"
fi
echo "Relaunching the same command (the pod's local disk is gone; the bucket is not):"
show "${full_run[@]}"

# Serve a model folder of the bucket with the inference chart, ask it one question (sets $answer), stop it.
serve_and_ask() {
  local model=$1 served_name=$2
  local serve=(llmft local charts/llm-inference-vllm --set "model=$model"
               --set "vllm_engine_args.served_model_name=$served_name"
               --name-template "$served_name" --port "$port")
  echo "\$ ${serve[*]} &"
  "${serve[@]}" &
  server=$!
  trap 'kill -TERM $server 2>/dev/null || true' EXIT
  until http "http://localhost:$port/health" >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { echo "the server did not start"; exit 1; }
    sleep 1
  done
  local question="What is the capital of Finland?"
  echo "\$ curl http://localhost:$port/v1/chat/completions ... \"$question\""
  answer=$(http "http://localhost:$port/v1/chat/completions" -H "Content-Type: application/json" \
    -d '{"model": "'"$served_name"'", "messages": [{"role": "user", "content": "'"$question"'"}], "max_tokens": 32}' \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
  echo "Question: $question"
  echo "Answer:   $answer"
  kill -TERM "$server"; wait "$server" || true
  trap - EXIT
}

step "4. Serve the fine-tuned model (vLLM in the cluster; here the CPU stand-in on the same API) and ask it"
serve_and_ask "s3://default-bucket/experiments/$name/checkpoint-final" "$name"
full_answer=$answer

step "5. Evaluate the sweep's runs on held-out data (the llm-evaluate chart), pick the best and serve it"
for r in 4 8 16; do
  show llmft local charts/llm-evaluate --values overrides/llm-evaluate/tiny-model-heldout.yaml \
    --name-template "eval-tiny-sweep-$run_id-$r" \
    --set "evaluation.target.run=default-bucket/experiments/tiny-sweep-$run_id-$r"
done
echo "\$ llmft evaluate-best \"default-bucket/experiments/tiny-sweep-$run_id-*\" --metric heldout/loss"
best=$(llmft evaluate-best "default-bucket/experiments/tiny-sweep-$run_id-*" --metric heldout/loss)
echo "Best run by held-out loss: $best"
serve_and_ask "$best/checkpoint-final" "best-sweep-$run_id"

step "6. Where everything is, and the sweep's loss curves and evaluation scores"
show llmft storage ls default-bucket/experiments/
show llmft storage ls "default-bucket/experiments/$name"
show llmft report "default-bucket/experiments/tiny-sweep-$run_id-*" --out ".demo/report-$run_id" \
  --title "LoRA rank sweep $run_id (tiny model)"
echo
echo "Model answer: $full_answer"
echo "Best sweep run's answer: $answer"
echo "Best sweep run by held-out loss: $best"
echo "Plot: $PWD/.demo/report-$run_id/report.png"
echo "The embedded S3 server keeps running for your own commands; stop it with: llmft local s3 stop"
