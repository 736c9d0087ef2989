"""The strategies that start from one random image per pair: `random`, `fourier` and `coarse_to_fine`.

- `random`, `fourier`: one start image per pair, then the full ascent (`settings.steps`, default 600).
  `random` draws the noise its parameterization names (`Parameterization.start_noise`: the articles'
  `starts.multiscale` for pixels, `starts.fourier` 1/f noise for the fourier parameterization);
  `fourier` always draws 1/f noise.
- `coarse_to_fine` (the articles' "strategy 1"): start from the coarsest scale of the multi-scale
  fluctuations alone, optimize a few steps, add the next finer scale (same seeds), optimize longer, ...
  and finish with the full ascent (`settings.steps`, default 400).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import OIPAscent
from oipgraph.ascent.domain import STANDARDIZED
from oipgraph.core.errors import OIPGraphError
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.strategies.runs import OIPRun, StrategySettings, run_in_batches
from oipgraph.strategies.unfinished import keep_returned

# The final stage of coarse_to_fine (all scales) runs `settings.steps` or this many steps.
DEFAULT_COARSE_TO_FINE_FINAL_STEPS = 400


def _start_image_strategy(make_starts: Callable[[OIPAscent, np.ndarray, StrategySettings], np.ndarray], name: str):
    def run(
        ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
    ) -> OIPRun:
        streams = starts.pair_stream(map_index, init_index)
        seeds = starts.start_seeds(seed, streams)
        images = make_starts(ascent, seeds, settings)
        try:
            result = run_in_batches(ascent, images, map_index, settings, seeds=seeds)
        except PairsUnfinished as unfinished:
            keep_returned(unfinished, images, init_index, seed, streams, name)
            raise
        return OIPRun(result, images, init_index, seed, streams, [name] * len(map_index))

    run.__doc__ = f"The {name} strategy: {name} start images, then the full ascent."
    return run


def noise_starts(ascent: OIPAscent, seeds: np.ndarray, settings: StrategySettings, noise: str) -> np.ndarray:
    """Start images of pairs with these seeds, drawn from `noise`: `multiscale` or `fourier` (1/f).

    Args:
        ascent: The ascent (its image shape and domain).
        seeds: int64 [B, 2], the pairs' start seeds (`starts.start_seeds`).
        settings: The multi-scale starts' scales (`StrategySettings.scales`).
        noise: `multiscale` (`starts.multiscale`) or `fourier` (`starts.fourier`).

    Returns:
        float32 [B, H, W, C] start images in the ascent's domain.
    """
    shape = ascent.image_shape
    if noise == "fourier":
        images = starts.fourier(seeds, shape)
    else:
        images = starts.multiscale(seeds, shape, *settings.scales(shape[0]))
    return np.asarray(ascent.domain.from_standardized(images))


def random_starts(ascent: OIPAscent, seeds: np.ndarray, settings: StrategySettings) -> np.ndarray:
    """The random starts of pairs with these seeds: the noise `ascent.parameterization.start_noise` names."""
    return noise_starts(ascent, seeds, settings, ascent.parameterization.start_noise)


def _fourier_starts(ascent: OIPAscent, seeds: np.ndarray, settings: StrategySettings) -> np.ndarray:
    return noise_starts(ascent, seeds, settings, "fourier")


random_strategy = _start_image_strategy(random_starts, "random")
fourier_strategy = _start_image_strategy(_fourier_starts, "fourier")


def coarse_to_fine_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The coarse-to-fine strategy (the articles' "strategy 1").

    The pair's multi-scale start is built up scale by scale, coarsest first:
    the coarsest scale alone is standardized and optimized for
    `settings.coarse_to_fine_steps[0]` steps (default 20); then the next finer
    scale's fluctuations (the same ones `multiscale` would use for this seed)
    are added at their designed weight and the sum is restandardized
    (`starts.add_scale`), optimized for the next stage's steps (40, 80), and so
    on; once every scale is in, the full ascent runs `settings.steps` (default
    400). The stages run without the convergence stop; pairs that stop with
    `no_activation` in a stage still get the finer scales.

    Returns:
        The final ascent's result; `start_images` holds the coarsest-scale starts.

    Raises:
        OIPGraphError: bad settings, e.g. `coarse_to_fine_steps` without one
            positive entry per scale but the finest.
    """
    cells, factors = settings.scales(ascent.image_shape[0])
    stage_steps = tuple(settings.coarse_to_fine_steps)
    if len(stage_steps) != len(cells) - 1:
        raise OIPGraphError(
            f"coarse_to_fine_steps must give {len(cells) - 1} step counts (one per scale but the finest"
            f" of cells {list(cells)}), got {list(stage_steps)}"
        )
    streams = starts.pair_stream(map_index, init_index)
    seeds = starts.start_seeds(seed, streams)
    # A scale keeps its position in `cells` as its seed salt, so its noise is the one multiscale() uses.
    coarsest_first = sorted(range(len(cells)), key=lambda scale: cells[scale])

    def weighted_noise(scale: int) -> tf.Tensor:
        return factors[scale] * starts.scale_noise(seeds, ascent.image_shape, cells[scale], scale)

    raw = weighted_noise(coarsest_first[0])
    domain = ascent.domain
    images = np.asarray(domain.from_standardized(tf.image.per_image_standardization(raw)))
    start_images = images
    for scale, steps in zip(coarsest_first[1:], stage_steps):
        stage = run_in_batches(ascent, images, map_index, settings, steps=int(steps), conv_criterion=0.0, seeds=seeds)
        added = weighted_noise(scale)
        # In a value range the stage's images are standardized first, so that the scale adds at its designed weight.
        stage_images = stage.images if domain is STANDARDIZED else tf.image.per_image_standardization(stage.images)
        images = np.asarray(domain.from_standardized(starts.add_scale(stage_images, raw, added)))
        raw += added
    final_steps = settings.final_steps(DEFAULT_COARSE_TO_FINE_FINAL_STEPS)
    try:
        result = run_in_batches(ascent, images, map_index, settings, steps=final_steps, seeds=seeds)
    except PairsUnfinished as unfinished:  # The last stage's pairs are final as they come back.
        keep_returned(unfinished, start_images, init_index, seed, streams, "coarse_to_fine")
        raise
    return OIPRun(result, start_images, init_index, seed, streams, ["coarse_to_fine"] * len(map_index))
