"""What a strategy keeps of a call that its executor could not finish (`PairsUnfinished`: a silent worker).

The executor raises `PairsUnfinished` with the call's pairs that came back (`rows`, `result`). Each strategy
turns them into the pairs of its own call whose results it has (`unfinished.run`, an `OIPRun`, at positions
`unfinished.run_rows` of its pairs) and keeps only those that are final, i.e. that no later step of the
strategy would change; a strategy inside another (auto's stages) hands them up, and the outer one decides
again. `cli.compute.compute_maps` saves the maps all of whose pairs are in `run` (auto hands its final maps
to `on_final` itself), before the run ends with exit code 2; `--resume` computes the other maps as a fresh
run would, so the outputs equal an uninterrupted run's.

- The pairs of a strategy's last call are final as they come back (random, fourier, preactivation,
  coarse_to_fine's last stage: `keep_returned`); the earlier stages of coarse_to_fine keep nothing.
- Where each pair takes its map's best of several full ascents (precursor; auto's precursor stage), a
  pair's result is known once all of its map's starts came back (`keep_complete_maps`).
"""

from __future__ import annotations

import numpy as np

from oipgraph import starts
from oipgraph.ascent.results import select_pairs
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.strategies.runs import OIPRun

__all__ = ["choose_starts", "keep_complete_maps", "keep_returned"]


def keep_returned(
    unfinished: PairsUnfinished,
    start_images: np.ndarray,
    init_index: np.ndarray,
    seed: int,
    streams: np.ndarray,
    name: str,
) -> None:
    """For a call of all of a strategy's pairs, in order: the pairs that came back, as the strategy's `name`.

    Args:
        unfinished: The executor's exception; its `run` and `run_rows` are set (left None without results).
        start_images, init_index, streams: Per pair of the strategy (and of the call), as in `OIPRun`.
        seed: The run's seed.
        name: The strategy named in `OIPRun.strategy`.
    """
    if unfinished.result is None:
        return
    rows = unfinished.rows
    unfinished.run = OIPRun(
        unfinished.result, start_images[rows], init_index[rows], seed, streams[rows], [name] * len(rows)
    )
    unfinished.run_rows = rows


def choose_starts(
    loss: np.ndarray, start_maps: np.ndarray, map_index: np.ndarray, init_index: np.ndarray
) -> np.ndarray:
    """The start each pair takes: pair (map_index[b], init_index[b]) the init_index[b]-th best of its map's starts.

    Args:
        loss: float [S], each start's final loss (only the pairs' maps' starts are read).
        start_maps: int [S], each start's map.
        map_index, init_index: int [B], the pairs.

    Returns:
        int64 [B], rows of the starts: best loss first, ties in start order.
    """
    ranked = {}
    for map_id in np.unique(map_index).tolist():
        of_map = np.flatnonzero(start_maps == map_id)
        ranked[map_id] = of_map[np.argsort(-loss[of_map], kind="stable")]
    return np.array([ranked[m][i] for m, i in zip(map_index.tolist(), init_index.tolist())], np.int64)


def keep_complete_maps(
    unfinished: PairsUnfinished,
    start_images: np.ndarray,
    start_maps: np.ndarray,
    map_index: np.ndarray,
    init_index: np.ndarray,
    pairs: np.ndarray,
    seed: int,
) -> None:
    """For a call of the full ascents of several starts per map (`start_maps`), ranked by `choose_starts`:
    the pairs `pairs` (positions in map_index) whose map's starts all came back, as `precursor`.

    Args:
        unfinished: The executor's exception; its `run` and `run_rows` are set (left None where no map is
            complete).
        start_images: float32 [S, H, W, C], the starts of the call.
        start_maps: int [S], their maps.
        map_index, init_index: int [B], the strategy's pairs.
        pairs: int [P], the positions of the pairs that take a start of this call.
        seed: The run's seed.
    """
    if unfinished.result is None:
        return
    back = np.zeros(len(start_maps), bool)
    back[unfinished.rows] = True
    complete = [m for m in np.unique(start_maps).tolist() if back[start_maps == m].all()]
    pairs = np.asarray(pairs, np.int64)
    pairs = pairs[np.isin(map_index[pairs], complete)]
    if not len(pairs):
        return
    position = np.zeros(len(start_maps), np.int64)
    position[unfinished.rows] = np.arange(len(unfinished.rows))
    loss = np.full(len(start_maps), np.nan, np.float32)
    loss[unfinished.rows] = unfinished.result.loss
    chosen = choose_starts(loss, start_maps, map_index[pairs], init_index[pairs])
    streams = starts.pair_stream(map_index[pairs], init_index[pairs])
    result = select_pairs(unfinished.result, position[chosen])
    unfinished.run = OIPRun(result, start_images[chosen], init_index[pairs], seed, streams, ["precursor"] * len(pairs))
    unfinished.run_rows = pairs
