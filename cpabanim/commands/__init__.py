"""The tools around the pipeline: ``cpabanim <command>``, one module (or package) per command.

    params             the resolved parameters and the layer each value comes from; ``--write`` for DVC
    dag                dvc.yaml and workflow/rules/*.smk generated from the stage declarations (``--check`` in tests)
    demo               animate your own photo with a driving video (``demo/``: photo, panels)
    import_checkpoint  a TPSMM checkpoint -> a cpabanim one (``import-checkpoint``)
    bench              benchmarks printed side by side (``bench/``: cpab, train, profile, data)
    weights            fetch the official pretrained weights into ``{paths.weights}``
    ui                 the MLflow UI on the project's runs, in its model-training layout
    app                the demo as a web page (Gradio) on 127.0.0.1
    checkpoints        each run's ``last.pt`` and every model a restart kept (``superseded/``)
    tracking_server    one MLflow server on PostgreSQL that the jobs of several machines log to (``tracking-server``)

Contract: a command module has ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code), and is
registered in :data:`cpabanim.cli.COMMANDS` with its one-line help; the CLI imports it only when it runs. A command
offers only the parameter-layer options it reads (:func:`cpabanim.config.layers.add_params_arguments`). A user
mistake is a :class:`~cpabanim.errors.CpabanimError` (the CLI prints it as one line and exits 1), never a
traceback. Commands are not pipeline stages: neither orchestrator runs them (except ``params --write``, DVC's
``params`` stage); what they fetch or convert (weights, an imported checkpoint) is an input the user provides once.
"""
