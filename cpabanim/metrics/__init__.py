"""Evaluation metrics of the animation field (FOMM/MRAA pose-evaluation protocol) and their helpers.

- :mod:`cpabanim.metrics.formulas`: pure functions (L1, PSNR, SSIM, AKD, MKR, AED) on batched arrays;
- :mod:`cpabanim.metrics.extractors`: pluggable keypoint / identity extractors (dlib, face-alignment, mediapipe);
- :mod:`cpabanim.metrics.cache`: per-video extractor results cached by the frames' content hash;
- :mod:`cpabanim.metrics.baselines`: the metrics.json names of the no-motion baselines;
- :mod:`cpabanim.metrics.io`: frame folders, PNG / MP4 / GIF writing;
- :mod:`cpabanim.metrics.animator`: the small "animator" protocol the stages run (a model, or the identity).
"""
