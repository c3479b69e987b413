"""The model server: loading by alias, hot swap, the prediction log (``python -m cl_hpc.serve``)."""
