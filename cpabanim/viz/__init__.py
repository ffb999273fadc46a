"""Pictures of what the model does: keypoints, dense flow, occlusion and the share of each transform.

See :mod:`cpabanim.viz.explain` (used by ``cpabanim demo --explain DIR``).
"""

from cpabanim.viz.explain import FrameExplanation, explanation_from_output, transform_names, write_explanation

__all__ = ["FrameExplanation", "explanation_from_output", "transform_names", "write_explanation"]
