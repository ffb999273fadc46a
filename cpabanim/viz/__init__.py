"""Pictures of what the model does: keypoints, dense flow, occlusion and the share of each transform.

See :mod:`cpabanim.viz.explain` (the pictures; used by ``cpabanim demo --explain DIR``) and
:mod:`cpabanim.viz.motion` (what they show, as data).
"""
