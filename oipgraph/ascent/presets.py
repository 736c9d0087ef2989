"""Presets: which parameterization, step rule, step size and transforms an ascent runs.

- `articles`: the articles' method for standardized images: `pixels`, the `normalized` step
  (epsilon 0.01), no transforms. Its results are the method's as it always was, bit for bit.
- `natural`: lucid's lessons for natural-image models: `fourier` (1/f spectrum, colour
  decorrelation for RGB, a sigmoid into the value range), the normalized step on the spectrum
  (0.05), and lucid's standard transforms scaled to the image (`transforms.standard_transforms`).
  Chosen by measurement (BENCHMARKS.md, "Natural-image models"): Adam reached a little more activation
  but its high-frequency share grew with the steps (0.15 on VGG16 after 256 steps, 0.33-0.39 on the
  CIFAR-10 CNN), while the normalized step keeps the gradient's 1/f shape (0.06 and 0.08-0.12).

`resolve_recipe` fills what the user did not set from the preset; `preset="auto"` (the command's and
the export's default) takes `articles` for standardized images and `natural` for images in a value
range (given, inferred from the model, or set by `--preprocess`). Each piece can also be set alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from oipgraph.ascent.domain import Domain, Standardized
from oipgraph.ascent.parameterizations import PARAMETERIZATIONS
from oipgraph.ascent.step_rules import STEP_RULES
from oipgraph.ascent.transforms import Transforms, parse_transforms
from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named choice of every piece; `transforms` is a `--transforms` text."""

    name: str
    param: str
    optimizer: str
    learning_rate: float
    transforms: str


PRESETS: dict[str, Preset] = {
    "articles": Preset("articles", "pixels", "normalized", 0.01, "none"),
    "natural": Preset("natural", "fourier", "normalized", 0.05, "standard"),
}
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What an ascent runs, resolved.

    Attributes:
        preset: The preset the unset pieces came from.
        param: The parameterization's name.
        optimizer: The step rule's name.
        learning_rate: The step size (the `epsilon` of every ascent call).
        transforms: The transforms.
        reason: Why this preset (for the one line the command prints).
    """

    preset: str
    param: str
    optimizer: str
    learning_rate: float
    transforms: Transforms
    reason: str = ""

    def pieces(self) -> dict[str, object]:
        """The recipe as `OIPAscent`'s (and `OIPServable`'s) keyword arguments."""
        return {
            "preset": self.preset,
            "param": self.param,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "transforms": self.transforms,
        }

    def describe(self) -> dict[str, object]:
        """The recipe for catalog.json, the run record and TensorBoard: `pieces` with the transforms' numbers."""
        return {**self.pieces(), "transforms": self.transforms.describe()}

    def line(self) -> str:
        """One line that says what runs and why."""
        moves = ", ".join(f"{name}={value:g}" for name, value in self.transforms.describe().items() if value)
        return (
            f"preset {self.preset}{self.reason}: {self.param} parameterization, {self.optimizer} step"
            f" (learning rate {self.learning_rate:g}), transforms {moves or 'none'}"
        )


def default_preset(domain: Domain) -> str:
    """`articles` for standardized images, `natural` for images in a value range."""
    return "articles" if isinstance(domain, Standardized) else "natural"


def resolve_recipe(
    domain: Domain,
    image_shape: Sequence[int],
    preset: str | None = None,
    param: str | None = None,
    optimizer: str | None = None,
    learning_rate: float | None = None,
    transforms: Transforms | str | None = None,
) -> Recipe:
    """The recipe: each piece given, else the preset's (None: `articles`; `auto`: by the domain).

    Raises:
        OIPGraphError: an unknown preset, parameterization or step rule, or a bad learning rate or transforms.
    """
    reason = ""
    if preset is None:
        preset = "articles"
    elif preset == AUTO:
        preset = default_preset(domain)
        reason = f" (images {'standardized' if preset == 'articles' else 'in ' + domain.name})"
    if preset not in PRESETS:
        raise OIPGraphError(f"unknown preset {preset!r}; choose one of {AUTO}, {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    param = chosen.param if param is None else param
    optimizer = chosen.optimizer if optimizer is None else optimizer
    if param not in PARAMETERIZATIONS:
        raise OIPGraphError(f"unknown parameterization {param!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    if optimizer not in STEP_RULES:
        raise OIPGraphError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(STEP_RULES)}")
    if learning_rate is None:
        learning_rate = (
            chosen.learning_rate if optimizer == chosen.optimizer else STEP_RULES[optimizer].default_learning_rate
        )
    limits.check_epsilon("learning_rate", learning_rate)
    if transforms is None:
        transforms = chosen.transforms
    if isinstance(transforms, str):
        transforms = parse_transforms(transforms, image_shape)
    return Recipe(preset, param, optimizer, float(learning_rate), transforms, reason)
