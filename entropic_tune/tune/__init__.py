"""The Ray Tune layer: experiments of many trials over an engine (its CLI: ``entropic_tune.commands.sweep``).

    spaces       search-space YAML -> trial configs (no Ray)
    plan         the plan of trials in experiment.yaml, checked at the end of a run (no Ray)
    layout       where a sweep's files live, checkpoint clean-up, folder size (no Ray)
    progress     trials done/running/left and the time to go (no Ray)
    estimate     --dry-run's wall-time estimate (torch only to measure)
    sweep        Tuner + OptunaSearch wiring, resume
    trainable    the function trainable: one trial = one Trainer run, checkpoints, reports
    trainable_workers  --workers-per-trial: Ray Train's TorchTrainer inside a Tune trial
    callbacks    progress table and loggers (CSV, JSON, TensorBoard, MLflow)
    collect      summary.csv / history.csv from Ray's state, Optuna bookkeeping

Importing this package imports nothing of Ray; only ``sweep``, ``trainable``, ``trainable_workers``,
``callbacks`` and ``collect`` (inside one function) do.
"""
