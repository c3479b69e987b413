"""Profiling: a pure meter plus thin adapters.

- ``peaks``: dense datasheet peak FLOPS per GPU and dtype, and NVML device-name parsing;
- ``ceiling``: a cached matmul microbenchmark, the measured ceiling per device and dtype;
- ``flops``: FLOPs per training step (given by the model, analytic transformer, or counted);

Nothing heavy is imported here; import the submodule you need.
"""
