"""The main job end to end on a tiny setting, and its training paths against each other."""

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from experiments.iwrm_digits.__main__ import main
from experiments.iwrm_digits.data import batch_order, load_subset
from experiments.iwrm_digits.selection import auc
from experiments.iwrm_digits.training import _gramian_cosine, train
from settings import DEVICE
from utils.tensors import rand_, randn_


def test_the_whole_pipeline_writes_the_table_and_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 64 examples, batch 32, one epoch: 2 steps per run; 1 seed, 2 rates, every method and path.
    argv = ["--seeds", "1", "--epochs", "1", "--subset-size", "64", "--lrs", "0.01", "0.1"]
    main([*argv, "--out", str(tmp_path), "--no-progress", "--device", str(DEVICE)])

    table = (tmp_path / "table.md").read_text().splitlines()
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]) for line in table[2:]}
    methods = ["Mean", "UPGrad", "DualProj", "MGDA", "PCGrad"]
    expected = {(m, p) for m in methods for p in ("autogram", "autojac")} | {("SGD", "sgd")}
    assert rows == expected
    sgd_row = next(line for line in table if line.startswith("| SGD |"))
    assert sgd_row.endswith("| 1.0 |")  # the time reference
    for name in ("loss.png", "cosine.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        "5 aggregators (Mean, UPGrad, DualProj, MGDA, PCGrad) + plain SGD"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize("method", ["Mean", "UPGrad", "DualProj", "MGDA"])
def test_autojac_and_autogram_train_the_same_way(method: str) -> None:
    subset = load_subset(0, DEVICE, size=96)
    jac = train(method, "autojac", 0.1, 0, subset, n_epochs=1)
    gram = train(method, "autogram", 0.1, 0, subset, n_epochs=1)
    assert jac.losses.shape == (3,)
    torch.testing.assert_close(jac.losses, gram.losses, rtol=1e-4, atol=1e-5)
    assert jac.cosines is None
    assert gram.cosines is not None


def test_mean_is_sgd() -> None:
    subset = load_subset(1, DEVICE, size=96)
    mean = train("Mean", "autogram", 0.1, 1, subset, n_epochs=1)
    sgd = train("Mean", "sgd", 0.1, 1, subset, n_epochs=1)
    torch.testing.assert_close(mean.losses, sgd.losses)
    assert mean.cosines is not None
    torch.testing.assert_close(mean.cosines, torch.ones(3))


def test_a_diverged_run_stops_with_infinite_area() -> None:
    subset = load_subset(0, DEVICE, size=320)
    result = train("Mean", "sgd", 1e4, 0, subset, n_epochs=1)
    assert result.losses[0] == pytest.approx(math.log(10), abs=0.3)
    assert bool(torch.isinf(result.losses[-1]))
    assert auc(result.losses) == math.inf


def test_gramian_cosine_matches_the_cosine_of_the_vectors() -> None:
    J = randn_(5, 7).double()
    weights = rand_(5).double()
    expected = torch.nn.functional.cosine_similarity(weights @ J, J.mean(dim=0), dim=0)
    torch.testing.assert_close(_gramian_cosine(J @ J.T, weights), expected)


def test_gramian_cosine_of_a_zero_gramian_is_zero_not_nan() -> None:
    zero = torch.zeros(3, 3, device=DEVICE)
    assert float(_gramian_cosine(zero, torch.ones(3, device=DEVICE))) == 0.0


def test_subsets_differ_by_seed_and_are_normalised() -> None:
    first, second = load_subset(0, DEVICE), load_subset(1, DEVICE)
    assert first.images.shape == (1024, 1, 8, 8)
    assert first.labels.shape == (1024,)
    assert not torch.equal(first.labels, second.labels)
    assert set(first.labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match=r"Parameter `size` must be between 1 and 1797\. Found"):
        load_subset(0, DEVICE, size=2000)


def test_every_epoch_visits_each_example_once() -> None:
    batches = batch_order(3, n_examples=70, batch_size=32, n_epochs=2)
    assert [len(b) for b in batches] == [32, 32, 32, 32]  # the last 6 of each epoch dropped
    for epoch in (batches[:2], batches[2:]):
        indices: Tensor = torch.cat(epoch)
        assert len(set(indices.tolist())) == 64


def test_importing_without_the_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "tqdm" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.delitem(sys.modules, "experiments.iwrm_digits")
    with pytest.raises(ImportError, match=r'tqdm.*pip install "torchjd\[experiment\]"'):
        importlib.import_module("experiments.iwrm_digits")
