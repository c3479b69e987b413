"""`python -m cl_hpc.watch`: evaluate the retraining triggers and launch the pipeline when one fires.

- ``state``: the trigger state, gathered from the registry's champion and the landing zone;
- ``lock``: at most one watch-launched run of a model at a time, with stale-lock detection;
- ``check``: one check (lock, triggers, log, launch);
- ``__main__``: the command line, one shot or ``--loop``.
"""
