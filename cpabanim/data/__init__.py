"""Data: from raw sources to the frames a stage reads (the libraries behind the ``download``, ``preprocess`` and
``masks`` stages, and the training input pipeline; docs/data.md).

    sources       resumable sha256-checked downloads, safe archive extraction, YouTube clips from published metadata
    download      ``data.source`` -> ``{paths.raw}/<source>/`` + manifest; official pretrained weights
    preprocess    raw videos -> ``{paths.processed}/{train,test}/<video>/<00000>.png`` + manifest (deterministic)
    names         safe names of videos and pairs (no ``#``: URLs, shells, MLflow) and the record of the originals
    faces         face crops for the ``folder`` source (detect, track, smooth, crop)
    masks         region label maps of the training frames (SAM or SLIC) for the keypoint semantic loss
    video         reading any video (frame folder, mp4, gif, strip) as uint8 (T, H, W, 3); writing frame folders
    frames        the frame folders and viewing videos the reconstruct / animate / evaluate stages write
    synthetic     the embedded offline default dataset
    dataset       ``FramesDataset``: training pairs (and test videos) over a processed root
    augmentation  the pair augmentations, drawn from an explicit generator
    loader        seeded item keys, the epoch batch sampler and the ``DataLoader`` factory

Contract: a bad input raises :class:`~cpabanim.errors.DataError` naming the file, and one bad item of a dataset is
skipped and recorded in the manifest, never fatal. Single files are written with :func:`cpabanim.files.write_atomically`
(JSON with :func:`cpabanim.files.write_json`); folders are written beside their place under a hidden ``.<name>.tmp``
and renamed into it, and partial downloads are the hidden ``.<name>.part.tmp``: every temporary name is hidden from
DVC (``.dvcignore``) and from the listings, so an interrupted run never leaves something a later run takes as done.
Progress bars are :func:`cpabanim.progress.progress_bar` (plain lines in logs). Nothing here imports ``cpabanim.models``
or above.
"""
