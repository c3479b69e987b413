"""The built-in pipeline tasks. Each module has ``run(ctx: TaskContext, **params) -> dict``.

- ``cl_hpc.tasks.ingest.run(ctx, data)``: fill the landing zone on first use, read the newest train
  window and the later eval window with dask, validate them, copy them into the task dir;
- ``cl_hpc.tasks.validate.run(ctx, registry, ...)``: schema, NaN and label-shift checks of the train window;
- ``cl_hpc.tasks.train.run(ctx, model, datamodule, fit, ...)``: fit any workload (the model contract,
  cl_hpc/learn/contract.py) with Lightning, stateless or as a stateful fine-tune of the champion;
  save a checksummed checkpoint that records its classes, init arguments, states and signature;
- ``cl_hpc.tasks.evaluate.run(ctx, data, ...)``: verify and load the checkpoint, score it on the
  held-out eval window with the model's own metrics (and the data module's baseline);
- ``cl_hpc.tasks.compare.run(ctx, gate, registry, ...)``: the champion/challenger gate;
- ``cl_hpc.tasks.promote.run(ctx, registry, config)``: register the challenger, promote it if it passed;
- ``cl_hpc.tasks.labels.run(ctx, labels)``: the label join (cl_hpc/labels/): logged predictions + outcomes
  within a window -> labelled partitions appended to a landing zone (conf/pipeline/labels.yaml);
- ``cl_hpc.tasks.features.materialize(ctx, view, store, shards)`` / ``commit(ctx, view, store)``: a feature
  view's pending partitions, split over a fan-out (a Slurm job array), then committed (conf/pipeline/features.yaml).

``model`` and ``datamodule`` are ``_target_`` configs (conf/model/*.yaml), ``fit`` and ``data`` the
``cl_hpc.config.ml.FitConf`` / ``DataConf`` groups as plain dicts, ``labels`` the
``cl_hpc.config.labels.LabelsConf`` group; conf/pipeline/*.yaml wire them.
Nothing heavy is imported here.
"""
