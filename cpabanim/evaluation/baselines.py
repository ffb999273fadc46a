"""Names of the no-motion baselines that ``cpabanim evaluate`` scores beside every metric (docs/evaluation.md).

Kept free of heavy imports: the report reads these names without loading the metric networks.

- ``baseline/copy_source/recon/<metric>``: reconstruction where the prediction of frame t is the source frame 0;
- ``baseline/source_unchanged/anim/<metric>``: animation where every frame is the source image (one value for
  all modes: the pairs and frames are the same).
"""

from __future__ import annotations

BASELINE_PREFIX = "baseline/"
COPY_SOURCE = "copy_source"
SOURCE_UNCHANGED = "source_unchanged"


def baseline_key(metric: str) -> str | None:
    """The metrics.json key of the no-motion baseline of ``metric`` (None for counts and baselines themselves).

    ``recon/l1`` -> ``baseline/copy_source/recon/l1``; ``anim/<mode>/akd_driving`` ->
    ``baseline/source_unchanged/anim/akd_driving``.
    """
    parts = metric.split("/")
    if metric.startswith(BASELINE_PREFIX) or parts[-1] == "frames":
        return None
    if parts[0] == "recon" and len(parts) == 2:
        return f"{BASELINE_PREFIX}{COPY_SOURCE}/{metric}"
    if parts[0] == "anim" and len(parts) == 3:
        return f"{BASELINE_PREFIX}{SOURCE_UNCHANGED}/anim/{parts[2]}"
    return None
