"""The trainer of ``cpabanim train`` (docs/model.md, "Trainer").

``loop.train`` runs or resumes training; ``step`` holds one optimisation step (model + objective under
autocast, backward, clipping, Adam); ``state`` the checkpoint and resume logic; ``schedule`` the per-epoch
schedule; ``images`` the logged image grid. The input pipeline is ``cpabanim.data.loader``.
"""

from __future__ import annotations

from cpabanim.training.loop import train

__all__ = ["train"]
