"""Start strategies and the layer-wide entry point `create_oips`.

A strategy turns (maps, seed) into OIPs: it makes start images, runs the
compiled ascent, and says per pair which strategy produced the result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import keras
import numpy as np

from oipgraph import starts
from oipgraph.ascent import DEFAULT_CONV_CRITERION, DEFAULT_EPSILON, DEFAULT_STEPS, AscentResult, OIPAscent
from oipgraph.errors import OIPGraphError

DEFAULT_BATCH_SIZE = 256


@dataclasses.dataclass
class StrategySettings:
    """What every strategy needs besides the maps and the seed."""

    steps: int = DEFAULT_STEPS
    epsilon: float = DEFAULT_EPSILON
    conv_criterion: float = DEFAULT_CONV_CRITERION
    batch_size: int = DEFAULT_BATCH_SIZE
    verbose: bool = False


@dataclasses.dataclass
class OIPRun:
    """OIPs for B pairs (map, init): the ascent results plus where they came from.

    Attributes:
        result: The `AscentResult` of the final ascent of every pair.
        start_images: float32 [B, H, W, C], the start image of the final ascent.
        init_index: int32 [B], which of a map's starts a pair is.
        seed: The run's seed; pair b used stateless seed `[seed, streams[b]]`.
        streams: int64 [B], the seed stream of every pair.
        strategy: Per pair, the strategy that produced the final OIP.
    """

    result: AscentResult
    start_images: np.ndarray
    init_index: np.ndarray
    seed: int
    streams: np.ndarray
    strategy: list[str]

    @property
    def map_index(self) -> np.ndarray:
        return self.result.map_index

    def __len__(self) -> int:
        return len(self.result)


def run_in_batches(
    ascent: OIPAscent, images: np.ndarray, map_index: np.ndarray, settings: StrategySettings, steps: int | None = None
) -> AscentResult:
    """Runs the ascent over any number of pairs, `settings.batch_size` at a time."""
    steps = settings.steps if steps is None else steps
    parts = []
    total = len(map_index)
    progbar = keras.utils.Progbar(total, unit_name="pair", verbose=1 if settings.verbose and total > settings.batch_size else 0)
    for begin in range(0, total, settings.batch_size):
        end = min(begin + settings.batch_size, total)
        parts.append(ascent(images[begin:end], map_index[begin:end], steps, settings.epsilon, settings.conv_criterion))
        progbar.update(end)
    return concat_results(parts)


def concat_results(parts: Sequence[AscentResult]) -> AscentResult:
    """Joins results of batches that ran with the same step count."""
    if len(parts) == 1:
        return parts[0]
    return AscentResult(
        **{
            field.name: np.concatenate([getattr(part, field.name) for part in parts])
            for field in dataclasses.fields(AscentResult)
            if field.name != "snapshot_steps"
        },
        snapshot_steps=parts[0].snapshot_steps,
    )


def _start_image_strategy(make_starts: Callable[[np.ndarray, tuple[int, int, int]], np.ndarray], name: str):
    def run(ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings) -> OIPRun:
        streams = starts.pair_stream(map_index, init_index)
        images = np.asarray(make_starts(starts.start_seeds(seed, streams), ascent.image_shape))
        result = run_in_batches(ascent, images, map_index, settings)
        return OIPRun(result, images, init_index, seed, streams, [name] * len(map_index))

    run.__doc__ = f"The {name} strategy: {name} start images, then the full ascent."
    return run


random_strategy = _start_image_strategy(lambda seeds, shape: starts.multiscale(seeds, shape), "random")
fourier_strategy = _start_image_strategy(lambda seeds, shape: starts.fourier(seeds, shape), "fourier")

# name -> fn(ascent, map_index [B], init_index [B], seed, settings) -> OIPRun
STRATEGIES: dict[str, Callable[..., OIPRun]] = {
    "random": random_strategy,
    "fourier": fourier_strategy,
}


def create_oips(
    ascent: OIPAscent,
    maps: Sequence[int] | None = None,
    strategy: str = "random",
    seed: int = 0,
    inits_per_map: int = 1,
    settings: StrategySettings | None = None,
) -> OIPRun:
    """OIPs for maps of the ascent's layer: the easy entry point.

    Args:
        ascent: The compiled ascent for one layer (see `OIPAscent.from_file`).
        maps: Map indices; None for every map of the layer.
        strategy: One of `STRATEGIES` (random, fourier, coarse_to_fine, precursor, auto).
        seed: Seed of all start images; same seed, same results.
        inits_per_map: Start images (and OIPs) per map.
        settings: Steps, epsilon, convergence criterion, batch size, progress.

    Returns:
        An `OIPRun` with pairs ordered map by map, init by init.
    """
    settings = settings or StrategySettings()
    if strategy not in STRATEGIES:
        raise OIPGraphError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if inits_per_map < 1:
        raise OIPGraphError(f"inits_per_map must be >= 1, got {inits_per_map}")
    maps = list(range(ascent.num_maps)) if maps is None else [int(k) for k in maps]
    bad = [k for k in maps if not 0 <= k < ascent.num_maps]
    if bad:
        raise OIPGraphError(f"map index {bad[0]} out of range: layer {ascent.layer_name} has maps 0..{ascent.num_maps - 1}")
    map_index = np.repeat(np.asarray(maps, np.int32), inits_per_map)
    init_index = np.tile(np.arange(inits_per_map, dtype=np.int32), len(maps))
    return STRATEGIES[strategy](ascent, map_index, init_index, seed, settings)
