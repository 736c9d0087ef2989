"""Parameterizations of the ascent's images: `pixels` (the articles') and `fourier` (lucid's).

A parameterization is one module with a `Parameterization` subclass plus one line in `PARAMETERIZATIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from oipgraph.ascent.domain import Domain
from oipgraph.ascent.parameterizations.base import Parameterization
from oipgraph.ascent.parameterizations.fourier import Fourier
from oipgraph.ascent.parameterizations.pixels import Pixels
from oipgraph.core.errors import OIPGraphError

PARAMETERIZATIONS: dict[str, type[Parameterization]] = {
    "pixels": Pixels,
    "fourier": Fourier,
}

__all__ = ["PARAMETERIZATIONS", "Fourier", "Parameterization", "Pixels", "build_parameterization"]


def build_parameterization(
    param: str | Parameterization, image_shape: Sequence[int], domain: Domain
) -> Parameterization:
    """The parameterization named `param` for images of `image_shape` in `domain` (a ready one as it is)."""
    if isinstance(param, Parameterization):
        return param
    if param not in PARAMETERIZATIONS:
        raise OIPGraphError(f"unknown parameterization {param!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    return PARAMETERIZATIONS[param](image_shape, domain)
