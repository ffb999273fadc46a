"""The field's metrics (L1, PSNR, SSIM, AKD, MKR, AED, LPIPS, FID) of reconstructions and animations, their
landmark/identity extractors and the no-motion baselines (the ``evaluate`` stage's library; docs/evaluation.md)."""
