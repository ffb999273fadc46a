"""cpabanim: Continuous Piecewise-Affine Based Motion Model for Image Animation (CPABMM, AAAI 2024).

Subpackages:
    cpabanim.cpab     CPAB transformations (tessellation, integration, keypoint fitting) in pure PyTorch
    cpabanim.models   the animation networks (keypoint detector, dense motion, inpainting, AVD)
    cpabanim.losses   perceptual pyramid, equivariance, warp, background, SAM keypoint semantic, DINO structure
    cpabanim.data     datasets, downloads and preprocessing

Each pipeline stage is one module with ``add_arguments(parser)`` and ``run(args)``; see ``cpabanim.cli``.
"""

__version__ = "0.1.0"
