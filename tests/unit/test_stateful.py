from __future__ import annotations

import pytest

import torchjd
from torchjd import Stateful


def test_exported_from_the_top_level() -> None:
    assert "Stateful" in torchjd.__all__
    assert torchjd.Stateful is Stateful


def test_reset_is_the_only_abstract_method() -> None:
    assert Stateful.__abstractmethods__ == frozenset({"reset"})
    with pytest.raises(TypeError, match="abstract"):
        Stateful()  # type: ignore[abstract]


def test_subclass_must_implement_reset() -> None:
    class Incomplete(Stateful):
        pass

    with pytest.raises(TypeError, match="reset"):
        Incomplete()  # type: ignore[abstract]


def test_subclass_with_reset() -> None:
    class Counter(Stateful):
        def __init__(self) -> None:
            self.count = 0

        def __call__(self) -> int:
            self.count += 1
            return self.count

        def reset(self) -> None:
            self.count = 0

    counter = Counter()
    assert [counter(), counter()] == [1, 2]
    counter.reset()
    assert counter() == 1
