"""The code example of the project's seed README runs verbatim.

The block below is a verbatim copy of the Python example of the seed README (the user's
document): the calls it makes are part of the public API contract.
"""

from __future__ import annotations

import torch

SEED_README_EXAMPLE = """\
import torch
from torch.nn import Linear, MSELoss, ReLU, Sequential
from torch.optim import SGD

from torchjd import mtl_backward
from torchjd.aggregation import UPGrad

shared_module = Sequential(Linear(10, 5), ReLU(), Linear(5, 3), ReLU())
task1_module = Linear(3, 1)
task2_module = Linear(3, 1)
params = [
    *shared_module.parameters(),
    *task1_module.parameters(),
    *task2_module.parameters(),
]

loss_fn = MSELoss()
optimizer = SGD(params, lr=0.1)
A = UPGrad()

inputs = torch.randn(8, 16, 10)  # 8 batches of 16 random input vectors of length 10
task1_targets = torch.randn(8, 16, 1)  # 8 batches of 16 targets for the first task
task2_targets = torch.randn(8, 16, 1)  # 8 batches of 16 targets for the second task

for input, target1, target2 in zip(inputs, task1_targets, task2_targets):
    features = shared_module(input)
    output1 = task1_module(features)
    output2 = task2_module(features)
    loss1 = loss_fn(output1, target1)
    loss2 = loss_fn(output2, target2)

    optimizer.zero_grad()
    mtl_backward(
        losses=[loss1, loss2],
        features=features,
        tasks_params=[task1_module.parameters(), task2_module.parameters()],
        shared_params=shared_module.parameters(),
        A=A,
    )
    optimizer.step()
"""


def test_seed_readme_example_runs() -> None:
    namespace: dict[str, object] = {}
    exec(compile(SEED_README_EXAMPLE, "seed README example", "exec"), namespace)
    # The loop ran to its end: every parameter got a finite gradient at the last step.
    params = namespace["params"]
    assert isinstance(params, list)
    assert len(params) == 8
    for param in params:
        assert isinstance(param, torch.Tensor)
        assert param.grad is not None
        assert torch.isfinite(param.grad).all()
