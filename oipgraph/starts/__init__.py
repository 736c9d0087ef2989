"""Start images: what every ascent starts from, made from stateless seeds without running the model.

Modules:
    noise: the per-pair seeds (`start_seeds`, `pair_stream`) and random start images: the articles'
        multi-scale fluctuations (`multiscale`, built up scale by scale with `scale_noise`/`add_scale`)
        and 1/f^alpha Fourier noise (`fourier`).
    patterns: `GridPatterns`, the precursor scan's coarse grid patterns (numbering, colours, images).

Imports only `oipgraph.core`.
"""

from oipgraph.starts.noise import (
    DEFAULT_CELLS,
    DEFAULT_FACTORS,
    DEFAULT_FOURIER_ALPHA,
    add_scale,
    check_scales,
    default_cells,
    fourier,
    image_stddev,
    multiscale,
    pair_stream,
    scale_noise,
    start_seeds,
)
from oipgraph.starts.patterns import GridPatterns

__all__ = [
    "DEFAULT_CELLS",
    "DEFAULT_FACTORS",
    "DEFAULT_FOURIER_ALPHA",
    "GridPatterns",
    "add_scale",
    "check_scales",
    "default_cells",
    "fourier",
    "image_stddev",
    "multiscale",
    "pair_stream",
    "scale_noise",
    "start_seeds",
]
