"""Learning: the model contract and everything the loop does with any model.

- ``contract``: what the loop asks of a model and its data module, and the records it keeps
  (Signature, Evaluation, Direction); ``base``: base classes with documented defaults;
- ``workload``: build and check a model + data module from ``_target_`` configs; ``checkpoint``:
  save and load them with their classes, init arguments, states and signature;
- ``training``: the Lightning fit (seeded, profiled, resumable); ``scoring``: evaluate and predict;
- the bundled workloads: ``tabular`` (MLP classifier, ``nets``) and ``gpt`` + ``tokens`` (a GPT-like LM);
- ``strategies``, ``gate``, ``triggers``, ``drift``, ``monitor``, ``validation``, ``metrics``: the loop's decisions.

Nothing heavy is imported here; import the submodule you need.
"""
