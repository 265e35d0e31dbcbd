#!/usr/bin/env bash
# Trains the models of RESULTS.md on one GPU machine with the standalone trainer
# (KERAS_BACKEND=jax; no TensorFlow needed), several runs at once on the same GPU.
#
#   DATA=/path/to/fer2013 OUT=out bash scripts/train_gpu.sh [MODEL...]
#
# MODEL: any of vggnet resnet18 dcnn vgg16 resnet50 vggnet-hsn dcnn-hsn compact compact-resnet
# compact-hsn resnet18-taught dcnn-taught compact-taught (default: the first seven; compact and
# compact-resnet are distilled from OUT/vggnet (compact-resnet from OUT/vggnet and
# OUT/resnet18) afterwards, and compact-hsn starts from OUT/compact and is distilled from
# OUT/vggnet-hsn: run `... scripts/train_gpu.sh compact compact-resnet`, then `...
# compact-hsn`. compact-resnet is the architecture of the shipped compact model since
# 2026-12-05 (63.4% from 45 CPU epochs distilled from the ResNet-18 + DCNN ensemble; it
# serves at about the mini-Xception model's speed on a CPU). On CPU, distilling the
# converged compact model from the DCNN gained 0.8 points on PublicTest over training it
# on without a teacher, and lost 0.6 on validation: a stronger teacher is what this is for;
# see RESULTS.md).
# resnet18-taught dcnn-taught compact-taught: each trained from random initialisation on a
# cosine, taught by the shipped fer2013-ensemble's three members with the flip (the recipe of
# the shipped networks' last rounds, given the epochs a CPU could not: RESULTS.md), keeping
# the mean of its last third's weights. Their teachers' weights come out of the shipped
# SavedModels, on a machine with TensorFlow, before the lease (TEACHERS, default OUT/teachers):
#   for m in resnet18:resnet18 dcnn:dcnn compact:compact_resnet; do
#     python -m components.trainer.saved_weights --saved-model models/fer2013-${m%%:*}/<version> \
#       --model ${m##*:} --output out/teachers/${m%%:*}.weights.h5; done
# A short lease fits one round of the three at once on one GPU, with
# the epochs cut to what the minutes allow and the mean taken over the last ten, e.g.
#   TEACHERS=out/teachers MAX_MINUTES=7 EXTRA_ARGS="--epochs 40 --average-from 31" \
#     bash scripts/train_gpu.sh resnet18-taught dcnn-taught compact-taught
# (each epoch's seconds are in OUT/<name>.log: size the next lease's --epochs from them).
# A cosine run's epoch count sets its curve, so it is part of the run's checkpoint key: to
# cut a run short (or lengthen it) once its epoch times are known, stop it (SIGTERM stops it
# cleanly) and start it again with the new length and --carry-over, e.g.
#   EXTRA_ARGS="--epochs 90 --average-from 61 --carry-over" bash scripts/train_gpu.sh compact-taught
# (its finished epochs are kept, the rest follow the 90-epoch curve; the weight average
# must start after them, or where the stopped run's began).
# DRY_RUN=1 prints each run's command instead of starting it.
# MAX_MINUTES=N stops each run cleanly after N minutes of training (best weights kept).
# EXTRA_ARGS="..." is appended to every run's arguments and overrides them (for a short
# lease, EXTRA_ARGS="--patience 10" halves the learning rate after 5 flat epochs, not 10).
# Each run writes OUT/<name>/ (weights, result.json, curves.png) and OUT/<name>.log, and
# resumes from its checkpoints when started again. Then export each through the pipeline:
#   fer-pipeline run --data DATA --output runs/<name> --model <model> [--classes ...] \
#       --warm-start OUT/<name>/<model>.weights.h5 --epochs 0
#
# First check that the backend initialises, under a time limit (on one H100 lease every
# call printed nothing until its limit: a setup script had written a `python` wrapper
# through a symlink over the interpreter; make a wrapper a new file and mv it into place):
#   timeout 120 python -c "import jax; print(jax.devices())"
# Bring weights back at half size with
#   python -m components.trainer.weights_dtype OUT/<name>/<model>.weights.h5 <name>.fp16.weights.h5
# (--warm-start reads the float16 file as it is).
#
# Measured on an H100 under JAX (keras 3.15, jax 0.11), see RESULTS.md: a DCNN step at batch
# 64 takes about 3 ms without augmentation; Keras's own flip/rotation/shift/zoom layers
# added 0.5 s to it. The augmentation is now one keras.ops layer (model.RandomFaceTransform:
# 3.5 ms per batch on 2 CPU cores under JAX, where those layers took 8.4 ms), not yet timed
# on a GPU. Check a new machine or version first (a minute):
#   KERAS_BACKEND=jax python -m components.trainer.benchmark --data DATA --models dcnn --batch-size 64
# The vggnet with SGD at learning rate 0.01 diverged in its first epoch there (7 classes and
# happy/sad/neutral alike; the DCNN and VGG16 with the same SGD settings did not), so the
# vggnet runs use Nadam at 1e-3, which did not.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?set DATA to the FER2013 folder (train/, test/)}"
OUT=${OUT:-out}
export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
HSN=happy,sad,neutral
TEACHERS=${TEACHERS:-$OUT/teachers}
# fer2013-ensemble's members, each face and its mirror image (as reproduce.sh's taught rounds)
TAUGHT="--teacher-model resnet18,dcnn,compact_resnet --teacher-flip --teacher-weights \
$TEACHERS/resnet18.weights.h5,$TEACHERS/dcnn.weights.h5,$TEACHERS/compact.weights.h5"
COSINE="--epochs 150 --batch-size 64 --lr-schedule cosine --patience 150 --imbalance none --average-from 101"
[ -n "${DRY_RUN:-}" ] || mkdir -p "$OUT"

args_of() {
  case $1 in
    vggnet)     echo --model vggnet --epochs 150 --batch-size 64 --patience 20 --imbalance none --label-smoothing 0.1 ;;
    resnet18)   echo --model resnet18 --epochs 150 --batch-size 64 --lr-schedule cosine --patience 150 --imbalance none ;;
    dcnn)       echo --model dcnn --epochs 150 --batch-size 64 --patience 20 --imbalance none ;;
    vgg16)      echo --model vgg16 --epochs 120 --batch-size 64 --optimizer sgd --learning-rate 0.01 --patience 15 --imbalance none ;;
    resnet50)   echo --model resnet50 --epochs 120 --batch-size 64 --optimizer sgd --learning-rate 0.01 --patience 15 --imbalance none ;;
    vggnet-hsn) echo --model vggnet --classes $HSN --epochs 150 --batch-size 64 --patience 20 --imbalance none --label-smoothing 0.1 ;;
    dcnn-hsn)   echo --model dcnn --classes $HSN --epochs 150 --batch-size 64 --patience 20 --imbalance none ;;
    compact)    echo --model compact --epochs 200 --batch-size 64 --patience 25 --imbalance none \
                     --teacher-model vggnet --teacher-weights "$OUT/vggnet/vggnet.weights.h5" --teacher-flip ;;
    compact-resnet) echo --model compact_resnet --epochs 150 --batch-size 64 --lr-schedule cosine \
                     --patience 150 --imbalance none --teacher-model vggnet,resnet18 --teacher-flip \
                     --teacher-weights "$OUT/vggnet/vggnet.weights.h5,$OUT/resnet18/resnet18.weights.h5" ;;
    compact-hsn) echo --model compact --classes $HSN --epochs 60 --batch-size 64 --learning-rate 0.0002 \
                     --patience 10 --imbalance none --warm-start "$OUT/compact/compact.weights.h5" \
                     --warm-start-classes angry,disgust,fear,happy,sad,surprise,neutral \
                     --teacher-model vggnet --teacher-weights "$OUT/vggnet-hsn/vggnet.weights.h5" --teacher-flip ;;
    resnet18-taught) echo --model resnet18 $COSINE $TAUGHT ;;
    dcnn-taught)     echo --model dcnn $COSINE $TAUGHT ;;
    compact-taught)  echo --model compact_resnet $COSINE $TAUGHT ;;
    *) echo "unknown run $1" >&2; exit 2 ;;
  esac
}

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(vggnet resnet18 dcnn vgg16 resnet50 vggnet-hsn dcnn-hsn)
for run in "${runs[@]}"; do
  args=$(args_of "$run")
  # shellcheck disable=SC2086
  command=(python -m components.trainer.standalone --data "$DATA" --output "$OUT/$run" $args
           --max-minutes "${MAX_MINUTES:-0}" ${EXTRA_ARGS:-})
  if [ -n "${DRY_RUN:-}" ]; then
    echo "+ ${command[*]}"
  else
    "${command[@]}" > "$OUT/$run.log" 2>&1 &
  fi
done
[ -z "${DRY_RUN:-}" ] || exit 0
wait
for run in "${runs[@]}"; do tail -n 1 "$OUT/$run.log"; done
