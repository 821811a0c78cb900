"""Which rule handles which module: a registry keyed by module type, looked up along the MRO."""

from __future__ import annotations

from torch import nn

from ._attention_rule import AttentionRule
from ._call import Rule
from ._conv_rule import ConvRule
from ._conv_transpose_rule import ConvTransposeRule
from ._embedding_rule import EmbeddingRule
from ._generic_rule import GenericRule
from ._linear_rules import _NORM_TYPES, AffineNormRule, LinearRule
from ._recurrent_rule import RecurrentRule

GENERIC_RULE = GenericRule()

_RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: LinearRule(),
    nn.Embedding: EmbeddingRule(),
    nn.MultiheadAttention: AttentionRule(),
    nn.RNN: RecurrentRule(),
    nn.LSTM: RecurrentRule(),
    nn.GRU: RecurrentRule(),
    nn.Conv1d: ConvRule(),
    nn.Conv2d: ConvRule(),
    nn.Conv3d: ConvRule(),
    nn.ConvTranspose1d: ConvTransposeRule(),
    nn.ConvTranspose2d: ConvTransposeRule(),
    nn.ConvTranspose3d: ConvTransposeRule(),
    **{kind: AffineNormRule() for kind in _NORM_TYPES},
}


def rule_for(module: nn.Module) -> Rule:
    """The closed-form rule of ``module``'s type (nearest in its MRO), else the generic rule.

    A closed-form rule is used only for a module all of whose parameters (children's included)
    it handles, and whose ``forward`` is the one the rule describes (a subclass that overrides
    it gets the generic rule, which is exact for any module).
    """
    for kind in type(module).__mro__:
        rule = _RULES.get(kind)
        if rule is not None and rule.accepts(module):
            handled = {id(p) for p in rule.handled_params(module)}
            if all(id(p) in handled for p in module.parameters()):
                return rule
    return GENERIC_RULE
