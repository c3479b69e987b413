"""Learning: models, training and metrics.

- ``nets``: plain torch networks (evaluation and serving load these without Lightning);
- ``model``: the LightningModule that trains them;
- ``training``: the CPU Trainer, seeding and the progress callback;
- ``metrics``: accuracy, log-loss, ROC AUC and macro-F1 in numpy.

Nothing heavy is imported here; import the submodule you need.
"""
