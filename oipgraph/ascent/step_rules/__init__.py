"""Step rules of the ascent: `normalized` (the articles') and `adam`.

A step rule is one module with a `StepRule` subclass plus one line in `STEP_RULES`.
"""

from __future__ import annotations

from oipgraph.ascent.step_rules.adam import Adam
from oipgraph.ascent.step_rules.base import StepRule
from oipgraph.ascent.step_rules.normalized import NormalizedStep
from oipgraph.core.errors import OIPGraphError

STEP_RULES: dict[str, type[StepRule]] = {
    "normalized": NormalizedStep,
    "adam": Adam,
}

__all__ = ["STEP_RULES", "Adam", "NormalizedStep", "StepRule", "build_step_rule"]


def build_step_rule(optimizer: str | StepRule) -> StepRule:
    """The step rule named `optimizer` (a ready one as it is)."""
    if isinstance(optimizer, StepRule):
        return optimizer
    if optimizer not in STEP_RULES:
        raise OIPGraphError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(STEP_RULES)}")
    return STEP_RULES[optimizer]()
