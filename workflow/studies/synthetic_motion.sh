#!/bin/sh
# The controlled large-motion study of docs/model.md ("Large-motion study (synthetic)", issue 35): cpab, implicit
# and tps at seeds 0, 1, 2 on the synthetic source at each motion size (data.synthetic.motion: small, medium, large),
# an equal budget of STEPS training steps, 8 test videos and 8 animation pairs per size (a verdict needs 8). Each
# size has its own folders (data/studies/<study>/<size>, models/studies/<study>/<size>,
# outputs/studies/<study>/<size>: data, checkpoints, runs and report) and MLflow experiment (cpabanim-<study>-<size>),
# so nothing overwrites another size or the embedded default, and dvc.lock is left alone (CPABANIM_RECORD=0: dvc.yaml
# describes the default's folders). Then `cpabanim bench motion` (the motion models alone, without training) and
# ONE table: outputs/studies/<study>/table.md and table.csv (cpabanim/reporting/study.py).
#
# Run from the repository root; extra arguments go to snakemake (e.g. -n to see the plan: then nothing else runs).
# Knobs (environment): STEPS (default 250), SEEDS (0,1,2), SIZES (small medium large), EXPERIMENTS (cpab,implicit,tps),
# CORES (2), STUDY (synthetic_motion); SMOKE=1: a tiny run of every step (1 step, seed 0, 32 px, a few frames, the
# quick benchmark) into outputs/studies/synthetic_motion_smoke, to check the script itself (20 min on 2 loaded cores).
set -e
SIZES=${SIZES:-small medium large}
EXPERIMENTS=${EXPERIMENTS:-cpab,implicit,tps}
CORES=${CORES:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # CORES jobs at a time, one thread each
SET="animate.num_pairs=8, data.synthetic.num_test=8, data.shards=2, masks.shards=2"
BENCH=""
if [ "${SMOKE:-0}" = 1 ]; then
  STUDY=${STUDY:-synthetic_motion_smoke}
  SEEDS=${SEEDS:-0}
  SET="data.frame_size=32, data.shards=1, masks.shards=1, data.synthetic={num_train: 2, num_test: 2, num_frames: 5},
    train={batch_size: 2, avd_epochs: 1, avd_repeats: 1, avd_batch_size: 2, num_workers: 0, image_every: 0},
    reconstruct.max_frames=4, animate={num_pairs: 1, modes: [relative]}, tracking.log_checkpoints=false"
  STEPS=${STEPS:-1}
  BENCH=--quick
fi
STUDY=${STUDY:-synthetic_motion}
STEPS=${STEPS:-250}
SEEDS=${SEEDS:-0,1,2}
OUT=outputs/studies/$STUDY
case " $* " in *" -n "* | *" --dry-run "* | *" --dryrun "*) DRY=1 ;; *) DRY=0 ;; esac

for size in $SIZES; do
  echo "== $STUDY: motion $size ($EXPERIMENTS, seeds $SEEDS, $STEPS steps)"
  CPABANIM_RECORD=0 snakemake --cores "$CORES" --config experiments="[$EXPERIMENTS]" seeds="[$SEEDS]" \
    set="[$SET, train.max_steps=$STEPS, data.synthetic.motion=$size, report.reference=default, \
tracking.experiment=cpabanim-$STUDY-$size]" \
    "paths={raw: data/studies/$STUDY/$size/raw, processed: data/studies/$STUDY/$size/processed, \
masks: data/studies/$STUDY/$size/masks, checkpoints: models/studies/$STUDY/$size/checkpoints, outputs: $OUT/$size}" \
    "$@"
done
if [ "$DRY" = 1 ]; then exit 0; fi

echo "== $STUDY: the motion models alone (cpabanim bench motion)"
cpabanim bench motion $BENCH --json "$OUT/bench_motion.json" >"$OUT/bench_motion.txt"
echo "== $STUDY: the table"
# every size with a report so far: sizes run one call at a time (SIZES=large, then SIZES=small, ...) end in one table
RAN=""
for size in small medium large; do
  if [ -f "$OUT/$size/report/tables.csv" ]; then RAN="$RAN${RAN:+,}$size"; fi
done
python -m cpabanim.reporting.study "$OUT" --sizes "$RAN" --bench "$OUT/bench_motion.json"
