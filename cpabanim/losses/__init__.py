"""Losses of the animation model: perceptual pyramid (VGG19 or offline pixel), equivariance, warp, background,
region-mask keypoint semantic loss and DINO structure alignment; pretrained weights registry in ``weights``."""
