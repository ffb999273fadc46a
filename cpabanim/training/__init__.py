"""The trainer of ``cpabanim train`` (docs/model.md, "Trainer").

``loop.train(job, runtime=...)`` runs or resumes a ``job.TrainingJob`` (the typed data / model / loss / train
sections and the explicit checkpoint path); ``step`` holds one optimisation step (model + objective, backward,
clipping, Adam); ``state`` the checkpoint and resume logic; ``schedule`` the per-epoch schedule; ``videos`` the
training videos as a dataset; ``avd`` TPSMM's AVD training (its schedule in ``avd_schedule``), which the avd stage
runs after training (``avd_stage``: its folder, checkpoints and resume); ``images`` the logged image grid;
``preemption`` stopping on SLURM's signals (exit code 3, requeue); ``launch`` and ``torchrun`` the several
processes that ``train.processes`` asks for. The device, ranks and precision are ``cpabanim.runtime.Runtime``'s;
the input pipeline is ``cpabanim.data.loader``.
"""
