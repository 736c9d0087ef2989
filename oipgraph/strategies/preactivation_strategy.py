"""The `preactivation` strategy: random starts woken up on the map's pre-activation, then the full ascent.

The wake-up itself is `preactivation.PreActivationWakeUp`.
"""

from __future__ import annotations

import numpy as np

from oipgraph import starts
from oipgraph.ascent import OIPAscent
from oipgraph.distribute.executors import PairsUnfinished
from oipgraph.strategies.preactivation import PreActivationWakeUp
from oipgraph.strategies.runs import OIPRun, StrategySettings, run_in_batches
from oipgraph.strategies.start_images import random_starts
from oipgraph.strategies.unfinished import keep_returned


def preactivation_strategy(
    ascent: OIPAscent, map_index: np.ndarray, init_index: np.ndarray, seed: int, settings: StrategySettings
) -> OIPRun:
    """The preactivation strategy: random starts woken up on the map's pre-activation, then the full ascent.

    The pair's random start (the one `random` uses for the same seed) is
    moved by `PreActivationWakeUp`, ascent on the peak of the map's
    pre-activation, until the map fires, for at most `settings.wake_steps`
    steps (200); the full ascent (`settings.steps`, default 600) continues from
    there. Starts on which the map fires already go straight to the full
    ascent, so for them the result is the random strategy's.

    Returns:
        The final ascent's result; `start_images` holds the random starts.

    Raises:
        OIPGraphError: the layer has no pre-activation (not a plain Conv2D).
    """
    wake_up = PreActivationWakeUp(ascent)
    streams = starts.pair_stream(map_index, init_index)
    seeds = starts.start_seeds(seed, streams)
    start_images = random_starts(ascent, seeds, settings)
    woken = []
    for begin in range(0, len(map_index), settings.batch_size):
        batch = slice(begin, begin + settings.batch_size)
        woken.append(
            wake_up(
                start_images[batch],
                map_index[batch],
                settings.wake_steps,
                settings.pixel_step_size(ascent),
                seeds[batch],
            ).images
        )
    try:
        result = run_in_batches(ascent, np.concatenate(woken), map_index, settings, seeds=seeds)
    except PairsUnfinished as unfinished:  # The wake-up ran here: the pairs that came back are final.
        keep_returned(unfinished, start_images, init_index, seed, streams, "preactivation")
        raise
    return OIPRun(result, start_images, init_index, seed, streams, ["preactivation"] * len(map_index))
