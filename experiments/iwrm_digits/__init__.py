"""Instance-wise risk minimisation (IWRM) on scikit-learn's digits: Jacobian descent against SGD.

A scaled-down reproduction of the IWRM experiment of "Jacobian Descent for Multi-Objective
Optimization" (Quinton & Rey, §5): every training example's loss is its own objective, a step
aggregates the 32 rows of the batch's Jacobian (``torchjd.autojac``) or weights the losses from
their Gramian (``torchjd.autogram``), and the learning rate of each aggregator is chosen by the
area under its training-loss curve. Run it with ``python -m experiments.iwrm_digits``.
"""

import importlib.util

_MISSING = [
    name for name in ("sklearn", "matplotlib", "tqdm") if importlib.util.find_spec(name) is None
]
if _MISSING:
    raise ImportError(
        f"The IWRM experiment needs the optional packages {', '.join(_MISSING)}, which are not "
        'installed. Install them with `pip install "torchjd[experiment]"` (or `pip install -e '
        '".[experiment]"` from a checkout).'
    )
