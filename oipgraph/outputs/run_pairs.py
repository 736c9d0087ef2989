"""A run's per-pair arrays for the writer: the small ones whole, the image-sized ones a block of pairs at a time.

At 224 x 224 a pair's images (final image, start image, snapshots) are about 6 MB and everything else a few KB:
a deep layer's 512 maps hold 3 GB of images. The writer (`writer.write_outputs`) needs every pair's small arrays
at once (catalog, best inits, loss curves) but each map's images only while it draws that map, so a `RunPairs`
gives it `small` whole and the images in `blocks` of whole maps: from memory (`from_arrays`, one block) or
from a run's saved groups (`run_progress.RunProgress.load_run`, one group at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

# The image-sized per-pair arrays (`OIPRun.arrays`): float32 [P, H, W, C], [P, H, W, C] and [P, F, H, W, C].
IMAGE_KEYS = ("images", "start_images", "snapshots")

Block = tuple[np.ndarray, dict[str, np.ndarray]]


class RunPairs:
    """A run's pairs in run order (map by map, init by init): `small` arrays whole, `IMAGE_KEYS` in `blocks()`.

    Args:
        small: Every per-pair array but `IMAGE_KEYS`, each [P, ...] in run order.
        blocks: Returns a fresh iterator of blocks `(rows, images)`: `rows` int [B], the blocks' places in run
            order (each pair in exactly one block, a map's pairs together and in init order), and `images`, each
            of `IMAGE_KEYS` as [B, ...] in the order of `rows`.
    """

    def __init__(self, small: dict[str, np.ndarray], blocks: Callable[[], Iterator[Block]]):
        self.small, self._blocks = small, blocks

    @classmethod
    def from_arrays(cls, pairs: dict[str, np.ndarray]) -> RunPairs:
        """All arrays in memory ([P, ...] in run order, `IMAGE_KEYS` among them): one block of every pair."""
        small = {key: value for key, value in pairs.items() if key not in IMAGE_KEYS}
        images = {key: pairs[key] for key in IMAGE_KEYS}
        return cls(small, lambda: iter([(np.arange(len(pairs["map_index"])), images)]))

    def __len__(self) -> int:
        return len(self.small["map_index"])

    def blocks(self) -> Iterator[Block]:
        """The image arrays, a block of whole maps at a time (see the class docstring)."""
        return self._blocks()
