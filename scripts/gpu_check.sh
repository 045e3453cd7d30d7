#!/usr/bin/env bash
# One prepared GPU check (issue 16, section 5), under 8 minutes on one H100/H200, on synthetic data in
# the real formats (FineWeb-format shards of random tokens, vocab 50304; CIFAR-10 python-batch files):
#   1. optbench experiment=nanogpt_track3, full size, bf16 + compile, STEPS steps: tokens/s and MFU
#   2. optbench experiment=airbench94_muon, EPOCHS epochs: seconds per epoch
#   3. with --reference DIR (a folder holding the modded-nanogpt and cifar10-airbench checkouts, or
#      --ref-nanogpt / --ref-airbench for each): the same for train_gpt_simple.py (torchrun, 1 GPU) and
#      airbench94_muon.py (needs torchvision: skipped with a note when it is missing), then the ratios.
# Everything goes under --out DIR: data/, runs, logs, one JSON per part and gpu_check.md (the figures).
#
#   scripts/gpu_check.sh --out results/gpu_check [--reference /path/to/reference] [--steps 100] [--epochs 2]
#   scripts/gpu_check.sh --out /tmp/gc --cpu-smoke    # tiny sizes on a CPU: every step but the reference's
#   scripts/gpu_check.sh --out /tmp/gc --dry-run      # data + patched reference copies, commands printed only
#
# Each part runs under `timeout` (GPT_TIMEOUT_S 160 s for each GPT part, CIFAR_TIMEOUT_S 50 s for ours,
# REF_CIFAR_TIMEOUT_S 90 s for airbench's, whose max-autotune compile and warm-up run come first): a part
# stopped there still reports from the steps it logged, so the whole check stays inside its budget.
set -euo pipefail

orig_args="$*"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
PY="${PYTHON:-python}"
out="" ; ref="" ; ref_gpt_dir="" ; ref_air_dir="" ; mode="gpu" ; steps=100 ; epochs=2 ; skip=10
# the presets measured (GPU_CHECK_GPT / GPU_CHECK_CIFAR replace them, word-split, to test this script alone)
read -r -a gpt_exp <<<"${GPU_CHECK_GPT:-experiment=nanogpt_track3}"
read -r -a cifar_exp <<<"${GPU_CHECK_CIFAR:-experiment=airbench94_muon}"
# time limits per part (s): with ~15 s of data, 160 + 50 + 160 + 90 keeps the whole check under 8 minutes
gpt_timeout="${GPT_TIMEOUT_S:-160}" ; cifar_timeout="${CIFAR_TIMEOUT_S:-50}" ; ref_cifar_timeout="${REF_CIFAR_TIMEOUT_S:-90}"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out|--reference|--ref-nanogpt|--ref-airbench|--steps|--epochs)
      [[ $# -ge 2 ]] || { echo "gpu_check: $1 needs a value" >&2; exit 2; } ;;&
    --out) out="$2"; shift 2 ;;
    --reference) ref="$2"; shift 2 ;;
    --ref-nanogpt) ref_gpt_dir="$2"; shift 2 ;;
    --ref-airbench) ref_air_dir="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --cpu-smoke) mode="cpu"; shift ;;
    --dry-run) mode="dry"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1'; valid: --out DIR --reference DIR --ref-nanogpt DIR --ref-airbench DIR --steps N --epochs N --cpu-smoke --dry-run" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || { echo "gpu_check: --out DIR is required (the results folder)" >&2; exit 2; }
[[ "$steps" =~ ^[0-9]+$ && "$steps" -gt "$skip" ]] || { echo "gpu_check: --steps $steps is invalid: must be an integer > $skip" >&2; exit 2; }
[[ "$epochs" =~ ^[0-9]+$ && "$epochs" -ge 1 ]] || { echo "gpu_check: --epochs $epochs is invalid: must be an integer >= 1" >&2; exit 2; }
if [[ -n "$ref" ]]; then
  [[ -n "$ref_gpt_dir" ]] || ref_gpt_dir="$ref/modded-nanogpt"
  [[ -n "$ref_air_dir" ]] || ref_air_dir="$ref/cifar10-airbench"
fi
ref_gpt_script="${ref_gpt_dir:+$ref_gpt_dir/records/track_3_optimization/train_gpt_simple.py}"
ref_air_script="${ref_air_dir:+$ref_air_dir/airbench94_muon.py}"
for f in "$ref_gpt_script" "$ref_air_script"; do
  [[ -z "$f" || -f "$f" ]] || { echo "gpu_check: reference script $f not found" >&2; exit 2; }
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tools() { "$PY" "$here/gpu_check_tools.py" "$@"; }
start_all=$SECONDS
notes="{}"
note() { notes="$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]=sys.argv[3]; print(json.dumps(d))' "$notes" "$1" "$2")"; echo "gpu_check: $1: $2"; }
failed=0
# a part's exit status: 124 = stopped at its time limit (the steps it logged still count), else a failure
outcome() {
  if [[ "$2" == 124 ]]; then note "$1" "stopped at its time limit; figures from the steps it logged"
  else note "$1" "failed with exit status $2 (see its log)"; failed=1; fi
}
# run a part under its time limit; 124 (the limit) still leaves logged steps to read
part() {
  local limit="$1" log="$2"; shift 2
  local t0=$SECONDS rc=0
  if [[ "$mode" == "dry" ]]; then echo "+ (timeout ${limit}s) $* > $log"; return 0; fi
  timeout --signal=TERM --kill-after=20 "$limit" "$@" >"$log" 2>&1 || rc=$?
  echo "gpu_check: $(basename "$log" .log): exit $rc after $((SECONDS - t0)) s (log: $log)"
  return $rc
}

# ------------------------------------------------------------------ sizes
tokens_per_step=524288
if [[ "$mode" != "gpu" ]]; then
  # a tiny version of the same commands: small model, short rows, few images, CPU, no compile
  vocab=1024; seq=64; batch=8; val_tokens=$((seq * batch * 2)); tokens_per_step=$((seq * batch))
  cifar_train=200; cifar_test=100; cifar_batch=50
  gpt_size=(model.n_layer=2 model.n_embd=256 model.vocab_size=$vocab data.vocab_size=$vocab task.seq_len=$seq task.val_tokens=$val_tokens
            trainer.batch_size=$batch trainer.grad_accum=1 task.eval_batch_size=4)
  dev=(trainer.device=cpu trainer.amp=off trainer.compile=false)
  cifar_size=(trainer.batch_size=$cifar_batch task.eval_batch_size=$cifar_batch "model.widths=[8,16,16]")
  cifar_dev=(trainer.device=cpu trainer.compile=false trainer.amp=off)
else
  vocab=50304; seq=1024; val_tokens=10485760; cifar_train=50000; cifar_test=10000; cifar_batch=2000
  # the reference's micro-batch on one GPU: 64 rows x 1024 tokens, 8 micro-steps per 524,288-token step
  gpt_size=(trainer.grad_accum=8)
  dev=(trainer.amp=bf16 trainer.compile=true)
  cifar_size=()
  cifar_dev=()   # the preset's own precision and compile
fi
steps_per_epoch=$(( (cifar_train + cifar_batch - 1) / cifar_batch ))
# train tokens for STEPS steps plus slack (the reference's generator needs one token past each batch)
train_tokens=$(( (steps + 4) * tokens_per_step + 1 ))

if [[ "$mode" == "gpu" ]]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' ||
    { echo "gpu_check: no CUDA device; use --cpu-smoke (tiny sizes on the CPU) or --dry-run" >&2; exit 2; }
  device="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
else
  device="$mode ($(uname -m))"
fi
echo "gpu_check: $device, mode $mode, $steps steps, $epochs epochs -> $out"

# ------------------------------------------------------------------ data (the real formats)
tools data --root "$out/data" --train-tokens "$train_tokens" --val-tokens $((val_tokens + 2 * seq)) --vocab "$vocab" \
  --cifar-train "$cifar_train" --cifar-test "$cifar_test" \
  ${ref_gpt_script:+--ref-gpt-dir "$out/ref_gpt"} ${ref_air_script:+--ref-cifar-dir "$out/ref_cifar"}

# ------------------------------------------------------------------ 1. optbench nanogpt_track3
rm -rf "$out/ours_gpt"
if part "$gpt_timeout" "$out/ours_gpt.log" "$PY" -m optbench.cli train "${gpt_exp[@]}" \
    "data.root=$out/data/fineweb10B" "trainer.max_steps=$steps" "trainer.eval_every=$steps" trainer.log_every=5 \
    trainer.progress=false trainer.stop_at_target=false "${gpt_size[@]}" "${dev[@]}" "hydra.run.dir=$out/ours_gpt"; then :
else outcome "optbench nanogpt_track3" $?; fi
[[ "$mode" == "dry" ]] || tools ours-gpt "$out/ours_gpt" --skip-steps "$skip" --out "$out/ours_gpt.json"

# ------------------------------------------------------------------ 2. optbench airbench94_muon
rm -rf "$out/ours_cifar"
if part "$cifar_timeout" "$out/ours_cifar.log" "$PY" -m optbench.cli train "${cifar_exp[@]}" \
    "data.root=$out/data/cifar10" "trainer.max_steps=$((epochs * steps_per_epoch))" \
    "trainer.eval_every=$((epochs * steps_per_epoch))" "trainer.log_every=$steps_per_epoch" trainer.progress=false \
    trainer.stop_at_target=false "${cifar_size[@]}" \
    "${cifar_dev[@]}" \
    "hydra.run.dir=$out/ours_cifar"; then :
else outcome "optbench airbench94_muon" $?; fi
[[ "$mode" == "dry" ]] || tools ours-cifar "$out/ours_cifar" --steps-per-epoch "$steps_per_epoch" --out "$out/ours_cifar.json"

# ------------------------------------------------------------------ 3. the reference scripts
if [[ -n "$ref_gpt_script" ]]; then
  tools patch-ref-gpt "$ref_gpt_script" "$out/ref_gpt/train_gpt_simple.py" --steps "$steps"
  if [[ "$mode" != "gpu" && "$mode" != "dry" ]]; then
    note "reference train_gpt_simple.py" "skipped: it needs CUDA and NCCL"
  elif (cd "$out/ref_gpt" && part "$gpt_timeout" "$out/ref_gpt.log" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 train_gpt_simple.py); then :
  else outcome "reference train_gpt_simple.py" $?; fi
  [[ "$mode" != "gpu" ]] || tools ref-gpt "$out/ref_gpt.log" --skip-steps "$skip" --tokens-per-step "$tokens_per_step" --out "$out/ref_gpt.json"
fi
if [[ -n "$ref_air_script" ]]; then
  tools patch-ref-cifar "$ref_air_script" "$out/ref_cifar/airbench94_muon.py" --epochs "$epochs"
  if ! "$PY" -c 'import torchvision' 2>/dev/null; then
    note "reference airbench94_muon.py" "skipped: torchvision is not installed (the script imports it; pip install torchvision)"
  elif [[ "$mode" != "gpu" && "$mode" != "dry" ]]; then
    note "reference airbench94_muon.py" "skipped: it needs CUDA"
  elif (cd "$out/ref_cifar" && part "$ref_cifar_timeout" "$out/ref_cifar.log" "$PY" airbench94_muon.py); then :
  else outcome "reference airbench94_muon.py" $?; fi
  [[ "$mode" != "gpu" || ! -f "$out/ref_cifar.log" ]] || tools ref-cifar "$out/ref_cifar.log" --out "$out/ref_cifar.json"
fi

# ------------------------------------------------------------------ figures
"$PY" - "$out/meta.json" "$device" "$steps" "$skip" "$epochs" "$notes" "$orig_args" <<'EOF'
import json, sys, datetime
path, device, steps, skip, epochs, notes, args = sys.argv[1:]
json.dump({"device": device, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "steps": int(steps), "skip": int(skip), "epochs": int(epochs), "notes": json.loads(notes),
           "command": f"scripts/gpu_check.sh {args}".strip()}, open(path, "w"), indent=1)
EOF
if [[ "$mode" == "dry" ]]; then
  echo "gpu_check: dry run: data and patched reference copies in $out; nothing trained"
else
  tools summary "$out"
fi
echo "gpu_check: done in $((SECONDS - start_all)) s"
[[ "$failed" == 0 ]] || { echo "gpu_check: a part failed (above); its figures are missing" >&2; exit 1; }
