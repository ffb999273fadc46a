"""One optimisation step (docs/model.md, "Trainer"): the model and objective in one module (what DDP wraps),
backward (through the runtime's GradScaler under fp16), inf-norm clipping, the two Adam optimisers and their
schedulers. The precision policy (autocast, scaler) is :class:`cpabanim.runtime.Runtime`'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cpabanim.config.typed import TrainConfig


class TrainingStep(nn.Module):
    """Model + objective in one module, so that DDP sees the whole step (losses call sub-networks again)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(
        self, batch: dict[str, Any], use_bg: bool, dropout_p: float, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """batch {source, driving: (B, 3, H, W), masks...} -> (losses {name: scalar}, generated outputs)."""
        generated = self.model(
            batch["source"], batch["driving"], use_bg=use_bg, dropout_p=dropout_p, generator=generator
        )
        losses = self.objective(self.model, batch, generated, use_bg, generator=generator)
        return losses, generated


@dataclass
class Optimization:
    """Adam over keypoint detector + dense motion + inpainting ("generator"), a second Adam over the background
    predictor ("bg", stepped from ``bg_start``), MultiStepLR x0.1 per epoch, inf-norm clipping."""

    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    clipped: list[nn.Module]
    clip: float
    scaler: Any = None

    @classmethod
    def build(cls, model: nn.Module, train: TrainConfig, scaler: Any = None) -> Optimization:
        """The optimisers of ``model`` with ``train``'s lr, betas, weight decay, milestones and clipping;
        ``scaler``: the runtime's GradScaler (fp16) or None."""
        betas = tuple(train.betas)
        main = [*model.kp_detector.parameters(), *model.dense_motion.parameters(), *model.generator.parameters()]
        optimizers = {
            "generator": torch.optim.Adam(main, lr=train.lr_generator, betas=betas, weight_decay=train.weight_decay)
        }
        if model.bg_predictor is not None:
            optimizers["bg"] = torch.optim.Adam(
                model.bg_predictor.parameters(), lr=train.lr_generator, betas=betas, weight_decay=train.weight_decay
            )
        # a list, as the schema's representation: the schedulers' state (and so the checkpoint) stays the same
        milestones = list(train.epoch_milestones)
        schedulers = {k: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma=0.1) for k, o in optimizers.items()}
        clipped = [model.kp_detector, model.dense_motion] + ([model.bg_predictor] if model.bg_predictor else [])
        return cls(optimizers, schedulers, clipped, float(train.clip_grad_norm), scaler)

    def backward_and_step(self, total: torch.Tensor, use_bg: bool) -> None:
        """Backward of the summed loss, clipping, then the active optimisers (bg only when ``use_bg``)."""
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.backward(total)
        self.clip_and_step(use_bg)

    def backward(self, total: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            for optimizer in self.optimizers.values():
                self.scaler.unscale_(optimizer)
        else:
            total.backward()

    def clip_and_step(self, use_bg: bool) -> None:
        for net in self.clipped:
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=self.clip, norm_type=float("inf"))
        active = [self.optimizers["generator"]] + (
            [self.optimizers["bg"]] if "bg" in self.optimizers and use_bg else []
        )
        for optimizer in active:
            if self.scaler is not None:
                self.scaler.step(optimizer)
            else:
                optimizer.step()
        if self.scaler is not None:
            self.scaler.update()

    def end_epoch(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizers["generator"].param_groups[0]["lr"]

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.optimizers, self.schedulers

    def load(self, optimizers: dict[str, Any], schedulers: dict[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(optimizers[k])
        for k, s in self.schedulers.items():
            s.load_state_dict(schedulers[k])
