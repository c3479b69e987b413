"""A model whose own code fails on some rows (a RuntimeError in predict, as a user's bug would): the
server answers such a request with a 500, logs it as failed, and a canary judges the error rate."""

from __future__ import annotations

import torch

from cl_hpc.learn.tabular import TabularClassifier

LIMIT = 1e3  # a scaled input beyond it: the bug fires (a raw input of 1e6 with the test data's moments)


class FlakyClassifier(TabularClassifier):
    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if bool((inputs.abs() > LIMIT).any()):
            raise RuntimeError("flaky: an input out of the range this version handles")
        return super().predict_batch(inputs)
