#!/usr/bin/env bash
# Rebuilds the eight shipped models of models/ from FER2013, stage by stage, with the
# commands and settings that made them (each stage has its section in RESULTS.md).
#
#   DATA=/path/to/fer2013 bash scripts/reproduce.sh [STAGE...]
#
# STAGE: any of the stages below, in this order (default: all), then `ship`, which exports
# the six final stages through the pipeline (`fer-pipeline run ... --epochs 0`) and scores
# and copies them to MODELS, then the two ensembles of those (`--model ensemble`), (default OUT/models, so the repository's models/ stay as they
# are; MODELS=models replaces them). Each training stage writes OUT/<stage>/ (weights,
# result.json, curves.png, checkpoints); a stage whose result.json says it finished is
# skipped, and one stopped part-way (time budget, SIGTERM) resumes from its checkpoints.
# DRY_RUN=1 prints every command and runs none (tests/test_reproduce.py checks them
# against the shipped models).
#
# Cost: on 2 CPU cores with the TensorFlow backend, about 23 hours in all (the DCNN alone
# 5.6 hours, 5-8 minutes an epoch; a ResNet-18 epoch 85-105 s, a compact one 30-50 s); on a
# GPU run it with KERAS_BACKEND=jax (scripts/train_gpu.sh says how to check the machine
# first). Training is not bit-for-bit deterministic: expect each stage's accuracy within
# about a point of its section's, not the same digits.
#
# The lineage (teachers in brackets; "narrowed" keeps every layer and the three outputs):
#   dcnn -> dcnn-hsn (narrowed)
#   resnet18 -> resnet18-restart -> resnet18-hsn (narrowed)
#   resnet18-restart [resnet18-restart + dcnn, flip] -> resnet18-kd
#   dcnn [resnet18-kd + dcnn, flip] -> dcnn-kd
#   resnet18-kd [itself, 8 views] -> resnet18-mv
#   resnet18-mv [itself, 8 views; weights averaged] -> resnet18-swa
#   dcnn-kd [resnet18-mv, 8 views] -> dcnn-mv
#   dcnn-mv [resnet18-swa, 8 views; weights averaged] -> dcnn-swa      = fer2013-dcnn
#   resnet18-mv [resnet18-hsn + dcnn-hsn, 8 views] -> resnet18-mv-hsn
#   resnet18-mv-hsn [itself, 8 views; weights averaged] -> resnet18-hsn-swa = fer2013-resnet18-happy-sad-neutral
#   dcnn-hsn [resnet18-hsn-swa, 8 views; weights averaged] -> dcnn-hsn-swa = fer2013-dcnn-happy-sad-neutral
#   [resnet18-kd + dcnn, flip] -> compact-resnet-kd
#   compact-resnet-kd [resnet18-mv, 8 views] -> compact-mv -> (again) compact-mv2
#   compact-mv2 [resnet18-swa, 8 views; weights averaged] -> compact-swa
#   compact-swa [resnet18-swa + dcnn-swa + compact-swa, flip; weights averaged] -> compact-swa2
#   resnet18-swa [resnet18-swa + dcnn-swa + compact-swa2, flip; weights averaged] -> resnet18-swa2 = fer2013-resnet18
#   compact-swa2 [resnet18-swa2 + dcnn-swa + compact-swa2, flip; weights averaged] -> compact-swa3
#   compact-swa3 [resnet18-swa2 + dcnn-swa + compact-swa3, flip; camera distortions; weights averaged]
#     -> compact-camera = fer2013-compact
#   compact-mv2 [resnet18-mv-hsn, 8 views] -> compact-mv2-hsn
#   compact-mv2-hsn [resnet18-hsn-swa, 8 views; weights averaged] -> compact-hsn-swa
#   compact-hsn-swa [resnet18-hsn-swa + dcnn-hsn-swa + compact-hsn-swa, flip; weights averaged] -> compact-hsn-swa2 = fer2013-compact-happy-sad-neutral
#   fer2013-resnet18 + fer2013-dcnn + fer2013-compact (nothing trained)  = fer2013-ensemble
#   the three happy/sad/neutral ones (nothing trained)                   = fer2013-ensemble-happy-sad-neutral
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to the FER2013 folder (train/, test/)}"
OUT=${OUT:-out/reproduce}
RUNS=${RUNS:-runs/reproduce}
MODELS=${MODELS:-$OUT/models}
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
ALL7=$("$PY" -c 'from pipeline import features; print(",".join(features.EMOTIONS))')  # a 7-class start
HSN=happy,sad,neutral

run() {
  echo "+ $*"
  [ -n "${DRY_RUN:-}" ] || "$@"
}

weights() {  # weights STAGE MODEL: the weights a training stage writes
  echo "$OUT/$1/$2.weights.h5"
}

train() {  # train STAGE MODEL ARGS...: one standalone training run
  local stage=$1 model=$2
  shift 2
  if [ -z "${DRY_RUN:-}" ] && [ -f "$OUT/$stage/result.json" ] && "$PY" -c \
      'import json, sys; sys.exit(not json.load(open(sys.argv[1])).get("finished"))' "$OUT/$stage/result.json"; then
    echo "= $stage: done ($OUT/$stage/result.json)"
    return
  fi
  [ -n "${DRY_RUN:-}" ] || mkdir -p "$OUT"
  run "$PY" -m components.trainer.standalone --data "$DATA" --output "$OUT/$stage" --model "$model" \
    --batch-size 64 --imbalance none "$@"
}

taught_round() {  # taught_round STAGE MODEL START EPOCHS LR TEACHERS [ARGS...]: one averaging round
  # A constant learning rate from the weights START, taught by an ensemble's three members
  # (TEACHERS: their resnet18,dcnn,compact_resnet weights, comma-separated) with the flip,
  # keeping the mean of all its epochs' weights. ARGS come first (--classes).
  local stage=$1 model=$2 start=$3 epochs=$4 lr=$5 teachers=$6
  shift 6
  train "$stage" "$model" "$@" --warm-start "$start" --epochs "$epochs" --learning-rate "$lr" \
    --lr-schedule plateau --reduce-lr-patience 100 --patience 100 \
    --teacher-model resnet18,dcnn,compact_resnet --teacher-flip --teacher-weights "$teachers" \
    --average-from 1
}

pushed() {  # pushed STAGE: the version directory the stage's export pushed
  if [ -n "${DRY_RUN:-}" ]; then
    echo "$RUNS/$1/serving/PUSHED/VERSION"
  else
    # the newest version (a timestamp) under whatever model name the export pushed to
    find "$RUNS/$1/serving" -mindepth 2 -maxdepth 2 -name "[0-9]*" | awk -F/ '{print $NF, $0}' \
      | sort -n | tail -1 | cut -d' ' -f2-
  fi
}

ship() {  # ship NAME MODEL STAGE [fer-pipeline run ARGS...]: export, score, copy to MODELS/NAME
  local name=$1 model=$2 stage=$3
  shift 3
  run "$PY" -m pipeline.cli run --data "$DATA" --output "$RUNS/$stage" --model "$model" \
    --imbalance none --calibration-temperature 0 --warm-start "$(weights "$stage" "$model")" --epochs 0 "$@"
  run "$PY" -m pipeline.ship --pushed "$(pushed "$stage")" --name "$name" --data "$DATA" \
    --models-dir "$MODELS" --result "$OUT/$stage/result.json"
}

ship_ensemble() {  # ship_ensemble NAME [fer-pipeline run ARGS...] --ensemble MEMBERS...: shipped models as one
  local name=$1
  shift
  run "$PY" -m pipeline.cli run --data "$DATA" --output "$RUNS/$name" --model ensemble \
    --imbalance none --calibration-temperature 0 --epochs 0 "$@"
  run "$PY" -m pipeline.ship --pushed "$(pushed "$name")" --name "$name" --data "$DATA" --models-dir "$MODELS"
}

stage() {
  case $1 in
    # The seed DCNN on the labels (Nadam, learning rate halved on a plateau; early stopping
    # ended the shipped run at epoch 44, best 36).
    dcnn) train dcnn dcnn --epochs 60 --patience 5 ;;
    # Its classifier narrowed to happy/sad/neutral, trained on the three (a 75-minute budget
    # stopped the shipped run after epoch 16 of 40; its best, epoch 14, was shipped).
    dcnn-hsn) train dcnn-hsn dcnn --classes $HSN --warm-start-classes $ALL7 \
        --warm-start "$(weights dcnn dcnn)" --epochs 40 --learning-rate 2.5e-4 --patience 6 \
        --reduce-lr-patience 3 ;;
    resnet18) train resnet18 resnet18 --epochs 50 --learning-rate 1e-3 --lr-schedule cosine \
        --patience 50 ;;
    resnet18-restart) train resnet18-restart resnet18 --warm-start "$(weights resnet18 resnet18)" \
        --epochs 60 --learning-rate 5e-4 --lr-schedule cosine --label-smoothing 0.1 --patience 60 ;;
    resnet18-hsn) train resnet18-hsn resnet18 --classes $HSN --warm-start-classes $ALL7 \
        --warm-start "$(weights resnet18-restart resnet18)" --epochs 12 --learning-rate 2.5e-4 \
        --lr-schedule cosine --patience 12 ;;
    resnet18-kd) train resnet18-kd resnet18 --warm-start "$(weights resnet18-restart resnet18)" \
        --epochs 45 --learning-rate 4e-4 --lr-schedule cosine --patience 45 \
        --teacher-model resnet18,dcnn --teacher-flip \
        --teacher-weights "$(weights resnet18-restart resnet18),$(weights dcnn dcnn)" ;;
    dcnn-kd) train dcnn-kd dcnn --warm-start "$(weights dcnn dcnn)" --epochs 12 \
        --learning-rate 2e-4 --lr-schedule cosine --patience 20 \
        --teacher-model resnet18,dcnn --teacher-flip \
        --teacher-weights "$(weights resnet18-kd resnet18),$(weights dcnn dcnn)" ;;
    resnet18-mv) train resnet18-mv resnet18 --warm-start "$(weights resnet18-kd resnet18)" \
        --epochs 24 --learning-rate 3e-4 --lr-schedule cosine --patience 30 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-kd resnet18)" \
        --teacher-views multiview --temperature 1 ;;
    # A constant learning rate (no plateau within the run) and the mean of all its epochs'
    # weights (stochastic weight averaging), kept as better on validation than any epoch.
    resnet18-swa) train resnet18-swa resnet18 --warm-start "$(weights resnet18-mv resnet18)" \
        --epochs 18 --learning-rate 2e-4 --lr-schedule plateau --reduce-lr-patience 100 \
        --patience 100 --teacher-model resnet18 --teacher-weights "$(weights resnet18-mv resnet18)" \
        --teacher-views multiview --temperature 1 --average-from 1 ;;
    # SIGTERM stopped its run after epoch 9 of 12 and the same command resumed it for the
    # last 3, none better than epoch 9 (its best, kept).
    dcnn-mv) train dcnn-mv dcnn --warm-start "$(weights dcnn-kd dcnn)" --epochs 12 \
        --learning-rate 2e-4 --lr-schedule cosine --patience 20 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-mv resnet18)" --teacher-views multiview ;;
    dcnn-swa) train dcnn-swa dcnn --warm-start "$(weights dcnn-mv dcnn)" --epochs 7 \
        --learning-rate 1e-4 --lr-schedule plateau --reduce-lr-patience 100 --patience 100 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-swa resnet18)" \
        --teacher-views multiview --average-from 1 ;;
    resnet18-mv-hsn) train resnet18-mv-hsn resnet18 --classes $HSN --warm-start-classes $ALL7 \
        --warm-start "$(weights resnet18-mv resnet18)" --epochs 14 --learning-rate 2.5e-4 \
        --lr-schedule cosine --patience 14 --teacher-model resnet18,dcnn \
        --teacher-weights "$(weights resnet18-hsn resnet18),$(weights dcnn-hsn dcnn)" \
        --teacher-views multiview ;;
    resnet18-hsn-swa) train resnet18-hsn-swa resnet18 --classes $HSN \
        --warm-start "$(weights resnet18-mv-hsn resnet18)" --epochs 10 --learning-rate 1.25e-4 \
        --lr-schedule plateau --reduce-lr-patience 100 --patience 100 --teacher-model resnet18 \
        --teacher-weights "$(weights resnet18-mv-hsn resnet18)" --teacher-views multiview \
        --temperature 1 --average-from 1 ;;
    compact-resnet-kd) train compact-resnet-kd compact_resnet --epochs 45 --learning-rate 1e-3 \
        --lr-schedule cosine --patience 45 --teacher-model resnet18,dcnn --teacher-flip \
        --teacher-weights "$(weights resnet18-kd resnet18),$(weights dcnn dcnn)" ;;
    compact-mv) train compact-mv compact_resnet --warm-start "$(weights compact-resnet-kd compact_resnet)" \
        --epochs 30 --learning-rate 5e-4 --lr-schedule cosine --patience 40 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-mv resnet18)" --teacher-views multiview ;;
    compact-mv2) train compact-mv2 compact_resnet --warm-start "$(weights compact-mv compact_resnet)" \
        --epochs 30 --learning-rate 3e-4 --lr-schedule cosine --patience 40 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-mv resnet18)" --teacher-views multiview ;;
    compact-swa) train compact-swa compact_resnet --warm-start "$(weights compact-mv2 compact_resnet)" \
        --epochs 16 --learning-rate 3e-4 --lr-schedule plateau --reduce-lr-patience 100 \
        --patience 100 --teacher-model resnet18 --teacher-weights "$(weights resnet18-swa resnet18)" \
        --teacher-views multiview --average-from 1 ;;
    # A second averaging round, taught by the three members of fer2013-ensemble.
    compact-swa2) taught_round compact-swa2 compact_resnet "$(weights compact-swa compact_resnet)" 40 3e-4 \
        "$(weights resnet18-swa resnet18),$(weights dcnn-swa dcnn),$(weights compact-swa compact_resnet)" ;;
    # The same for ResNet-18, taught by the three members the ensemble had then.
    resnet18-swa2) taught_round resnet18-swa2 resnet18 "$(weights resnet18-swa resnet18)" 30 2e-4 \
        "$(weights resnet18-swa resnet18),$(weights dcnn-swa dcnn),$(weights compact-swa2 compact_resnet)" ;;
    # And the compact model's third round, taught by the members of the ensemble after that.
    compact-swa3) taught_round compact-swa3 compact_resnet "$(weights compact-swa2 compact_resnet)" 40 3e-4 \
        "$(weights resnet18-swa2 resnet18),$(weights dcnn-swa dcnn),$(weights compact-swa2 compact_resnet)" ;;
    # The same round once more, the faces with camera distortions (exposure, contrast, blur,
    # noise; each with probability 0.3), taught by the members of fer2013-ensemble.
    compact-camera) taught_round compact-camera compact_resnet "$(weights compact-swa3 compact_resnet)" 40 3e-4 \
        "$(weights resnet18-swa2 resnet18),$(weights dcnn-swa dcnn),$(weights compact-swa3 compact_resnet)" \
        --camera 0.3 ;;
    compact-mv2-hsn) train compact-mv2-hsn compact_resnet --classes $HSN --warm-start-classes $ALL7 \
        --warm-start "$(weights compact-mv2 compact_resnet)" --epochs 16 --learning-rate 5e-4 \
        --lr-schedule cosine --patience 40 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-mv-hsn resnet18)" --teacher-views multiview ;;
    compact-hsn-swa) train compact-hsn-swa compact_resnet --classes $HSN \
        --warm-start "$(weights compact-mv2-hsn compact_resnet)" --epochs 12 --learning-rate 2.5e-4 \
        --lr-schedule plateau --reduce-lr-patience 100 --patience 100 --teacher-model resnet18 \
        --teacher-weights "$(weights resnet18-hsn-swa resnet18)" --teacher-views multiview --average-from 1 ;;
    dcnn-hsn-swa) train dcnn-hsn-swa dcnn --classes $HSN --warm-start "$(weights dcnn-hsn dcnn)" \
        --epochs 6 --learning-rate 1e-4 --lr-schedule plateau --reduce-lr-patience 100 --patience 100 \
        --teacher-model resnet18 --teacher-weights "$(weights resnet18-hsn-swa resnet18)" \
        --teacher-views multiview --average-from 1 ;;
    # A second averaging round, taught by the three members of fer2013-ensemble-happy-sad-neutral.
    compact-hsn-swa2) taught_round compact-hsn-swa2 compact_resnet "$(weights compact-hsn-swa compact_resnet)" \
        30 2.5e-4 \
        "$(weights resnet18-hsn-swa resnet18),$(weights dcnn-hsn-swa dcnn),$(weights compact-hsn-swa compact_resnet)" \
        --classes $HSN ;;
    ship)
      ship fer2013-dcnn dcnn dcnn-swa
      ship fer2013-dcnn-happy-sad-neutral dcnn dcnn-hsn-swa --classes $HSN
      ship fer2013-resnet18 resnet18 resnet18-swa2
      ship fer2013-resnet18-happy-sad-neutral resnet18 resnet18-hsn-swa --classes $HSN
      ship fer2013-compact compact_resnet compact-camera
      ship fer2013-compact-happy-sad-neutral compact_resnet compact-hsn-swa2 --classes $HSN
      ship_ensemble fer2013-ensemble --ensemble "$MODELS/fer2013-resnet18" "$MODELS/fer2013-dcnn" \
        "$MODELS/fer2013-compact"
      ship_ensemble fer2013-ensemble-happy-sad-neutral --classes $HSN --ensemble \
        "$MODELS/fer2013-resnet18-happy-sad-neutral" "$MODELS/fer2013-dcnn-happy-sad-neutral" \
        "$MODELS/fer2013-compact-happy-sad-neutral" ;;
    *) echo "unknown stage $1" >&2; exit 2 ;;
  esac
}

STAGES=(dcnn dcnn-hsn resnet18 resnet18-restart resnet18-hsn resnet18-kd dcnn-kd resnet18-mv
        resnet18-swa dcnn-mv dcnn-swa resnet18-mv-hsn resnet18-hsn-swa compact-resnet-kd compact-mv compact-mv2
        compact-swa compact-swa2 resnet18-swa2 compact-swa3 compact-camera compact-mv2-hsn compact-hsn-swa dcnn-hsn-swa compact-hsn-swa2 ship)
for name in "${@:-${STAGES[@]}}"; do
  stage "$name"
done
