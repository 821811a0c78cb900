"""The docs sources cover the public API (every name of each `__all__`) and every example."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).parents[2] / "docs" / "source"
PACKAGES = [
    "torchjd",
    "torchjd.aggregation",
    "torchjd.linalg",
    "torchjd.autojac",
    "torchjd.autogram",
]
DIRECTIVE = re.compile(
    r"^\s*\.\. auto(?:class|function|data|exception|attribute)::\s+([\w.]+)\s*$", re.MULTILINE
)


def documented_names() -> set[str]:
    """Return the fully qualified names that an autodoc directive of the docs sources names."""
    names: set[str] = set()
    for source in DOCS.rglob("*.rst"):
        names.update(DIRECTIVE.findall(source.read_text(encoding="utf-8")))
    return names


def undocumented(module: ModuleType, documented: set[str]) -> list[str]:
    """Return the names of ``module.__all__`` that no directive of ``documented`` names."""
    public: list[str] = module.__all__
    return [name for name in public if f"{module.__name__}.{name}" not in documented]


def test_directives_are_found() -> None:
    assert "torchjd.aggregation.UPGrad" in documented_names()


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package: str) -> None:
    module = importlib.import_module(package)
    assert undocumented(module, documented_names()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_documented_name_is_public(package: str) -> None:
    module = importlib.import_module(package)
    prefix = f"{package}."
    stale = [
        name
        for name in documented_names()
        if name.startswith(prefix)
        and "." not in name.removeprefix(prefix)
        and name.removeprefix(prefix) not in module.__all__
    ]
    assert stale == []


def test_a_new_public_name_without_docs_is_reported() -> None:
    module = ModuleType("torchjd.aggregation")
    module.__all__ = ["UPGrad", "BrandNew"]  # type: ignore[attr-defined]
    assert undocumented(module, documented_names()) == ["BrandNew"]


EXAMPLES = Path(__file__).parents[2] / "examples"


def test_every_example_has_a_page() -> None:
    scripts = sorted(path.stem for path in EXAMPLES.glob("*.py") if not path.name.startswith("_"))
    pages = {path.stem for path in (DOCS / "examples").glob("*.rst")}
    assert [script for script in scripts if script not in pages] == []
