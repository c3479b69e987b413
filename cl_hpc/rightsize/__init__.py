"""Right-sizing: a pure ``recommend(history, request) -> Recommendation`` (new portable Resources,
loader params, one reasoned Change per replaced value).

- ``history``: ``Observation`` (the measured facts of one past attempt), ``history_key``;
- ``recommend``: ``Policy``, ``Change``, ``Recommendation``, ``recommend`` and its rules.

Nothing heavy is imported here; import the submodule you need.
"""
