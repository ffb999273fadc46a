"""cpabanim: Continuous Piecewise-Affine Based Motion Model for Image Animation (CPABMM, AAAI 2024).

The tree follows the pipeline, lowest layer first (docs/architecture.md; a package imports only from lower ones):

    errors       the errors meant for the user (one line, no traceback) and the "did you mean" suggestion
    files        the one atomic write, JSON files, file hashes, paths contained in a folder
    config       the parameters: schema and defaults, five layers, --set / --config overrides, experiment paths
    progress     progress bars that write plain lines into logs
    runtime      the device, ranks and precision of a process (``Runtime``)
    weights      the pretrained weights registry (VGG19, DINO, SAM) and the one safe torch loader
    cpab         CPAB transformations (tessellation, integration, keypoint fitting) in pure PyTorch
    tracking     MLflow: where runs live, one run per stage, what a run records about its origin
    data         raw data downloads, preprocessing into frame folders, region masks, the training dataset
    models       the animation networks (keypoint detector, CPAB/TPS motion, dense motion, inpainting, AVD)
    viz          pictures of what the model does (keypoints, flow, occlusion)
    losses       perceptual pyramid, equivariance, warp, background, SAM keypoint semantic, DINO structure
    training     the trainer of ``cpabanim train`` (loop, step, checkpoint state, schedule, AVD)
    evaluation   the field's metrics of reconstructions and animations, their extractors and baselines
    animation    running a trained model: video reconstruction and cross-identity animation
    reporting    the comparison of experiments (tables, figures, HTML, MLflow parents)
    pipeline     the stages, each declared once (what it reads and writes) with its ``run(cfg, io)``
    commands     the tools around the pipeline (params, dag, demo, import-checkpoint, bench, weights, ui)
    cli          ``cpabanim <stage|command>``: the one command line
    schemas      (data) the params schema, one YAML file per section

This module imports nothing of the package: ``import cpabanim`` only gives the version.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cpabanim")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
