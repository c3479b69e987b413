"""The built-in pipeline tasks. Each module has ``run(ctx: TaskContext, **params) -> dict``.

- ``cl_hpc.tasks.ingest.run(ctx, data)``: fill the landing zone on first use, read the newest train
  window and the later eval window with dask, validate them, copy them into the task dir;
- ``cl_hpc.tasks.features.run(ctx, data)``: fit standardisation on the train window only, write the
  scaled train/eval tables and the statistics (JSON);
- ``cl_hpc.tasks.train.run(ctx, model)``: train the classifier with Lightning on CPU, save a
  checksummed state_dict checkpoint;
- ``cl_hpc.tasks.evaluate.run(ctx, model, data)``: verify and load the checkpoint, score it on the
  held-out eval window (accuracy, log-loss, ROC AUC or macro-F1).

``data`` and ``model`` are the ``data`` and ``model`` config groups as plain dicts
(``cl_hpc.config.ml.DataConf`` / ``ModelConf``); ``conf/pipeline/retrain.yaml`` wires them.
Nothing heavy is imported here.
"""
