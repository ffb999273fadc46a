#!/bin/sh
# The 3-seed face study of docs/model.md ("Real faces, three seeds"): cpab, implicit and tps on the clips of
# FACES (default ../shared/data/faces), their own train/test split, 3 seeds, an equal budget of STEPS steps.
# Run from the repository root; extra arguments go to snakemake (e.g. -n to see the plan).
FACES=${FACES:-../shared/data/faces}
exec snakemake --cores 2 --config experiments='[cpab,implicit,tps]' seeds='[0,1,2]' \
  set="[data.num_repeats=2, train.max_steps=${STEPS:-1200}, animate.num_pairs=12, report.reference=tps]" \
  "data={source: folder, frame_size: 64, folder: {dir: $FACES, segments: 8}}" \
  'evaluate={metrics: [l1, psnr, ssim, akd, mkr, aed], keypoints: dlib_face68, identity: dlib_face, face_upsample: 1}' "$@"
