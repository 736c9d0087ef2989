"""A run's TensorBoard summaries, written map by map into a temporary folder and then renamed into place.

Layout of LOGDIR/RUN_NAME: `run/flags`, `run/maps` (a table of every map's status, loss, steps and strategy),
`layer/oips` (the grid in pages of 16 maps, page k at step k), and per map `map_NNN/2_ascent` (the step slider
walks through the ascent), `map_NNN/3_loss`, and where they apply `1_start`, `4_variants` and
`5_dataset_examples`. Images are shown as the model's input domain says (`Domain.display`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from oipgraph.ascent.domain import Domain
from oipgraph.outputs import catalog, summaries


class TensorBoardRun:
    """LOGDIR/RUN_NAME of the run whose `--out` is `out`, written inside `with`, published by `publish()`.

    The folder records its owner, the real path of `out` (`catalog.TENSORBOARD_OWNER`); an existing
    LOGDIR/RUN_NAME is replaced only if it is this `out`'s own. Leaving `with` without `publish()` (an error)
    leaves no folder behind.
    """

    def __init__(self, logdir: str, run_name: str, out: str, domain: Domain):
        self.logdir, self.run_name, self.out, self.domain = logdir, run_name, out, domain
        self.temp: str | None = None
        self.writer = None

    def __enter__(self) -> TensorBoardRun:
        os.makedirs(self.logdir, exist_ok=True)
        self.temp = tempfile.mkdtemp(dir=self.logdir, prefix=".tmp-")
        catalog.make_private_temp_public(self.temp, directory=True)
        owner = os.path.realpath(self.out).encode()
        catalog.atomic_write_bytes(os.path.join(self.temp, catalog.TENSORBOARD_OWNER), owner)
        self.writer = tf.summary.create_file_writer(self.temp)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.writer is not None:
            self.writer.close()
        shutil.rmtree(self.temp, ignore_errors=True)

    def write_map(
        self,
        map_index: int,
        pair: dict[str, np.ndarray],
        variants: np.ndarray | None,
        label: str | None,
        example_strip: np.ndarray | None,
    ) -> None:
        """One map's cards (`summaries.write_map_images`, and its dataset examples where given).

        Args:
            map_index: The map's index in its layer (the cards' group, `map_NNN`).
            pair: The best pair's `start_images` [H, W, C], `snapshots` [F, H, W, C], `snapshot_steps` [F],
                `steps_run` and `images` [H, W, C].
            variants: float [K, H, W, C], all the map's OIPs when K > 1, else None.
            label: The map's name (`--labels`), shown on its ascent card.
            example_strip: uint8 [h, w, 3], `examples.example_strip`, or None.
        """
        tag = f"map_{map_index:03d}"
        with self.writer.as_default():
            summaries.write_map_images(
                tag,
                pair["start_images"],
                pair["snapshots"],
                pair["snapshot_steps"],
                int(pair["steps_run"]),
                pair["images"],
                self.domain,
                variants=variants,
                description=label,
            )
            if example_strip is not None:
                description = "The OIP(s), then the top dataset images, best first"
                tf.summary.image(
                    f"{tag}/{summaries.EXAMPLES_TAG}", example_strip[None], step=0, description=description
                )

    def write_layer(
        self, flag_text: str, entries: list[dict], tiles: np.ndarray, map_indices: list[int], histories: np.ndarray
    ) -> None:
        """The run's cards: its flags, the maps table (`entries`), the grid pages (`tiles`, uint8 [M, h, w, 3],
        each map's best OIP) and every map's loss curve (`histories`, float [M, T], its best pair's)."""
        with self.writer.as_default():
            tf.summary.text("run/flags", flag_text, step=0)
            tf.summary.text("run/maps", summaries.status_table(entries), step=0)
            summaries.write_grid_pages("layer/oips", tiles, map_indices)
            loss_tags = [f"map_{map_index:03d}/{summaries.LOSS_TAG}" for map_index in map_indices]
            summaries.write_loss_curves(loss_tags, histories)

    def publish(self) -> None:
        """Closes the summaries and renames them to LOGDIR/RUN_NAME (replacing this `out`'s own earlier run)."""
        self.writer.close()
        self.writer = None
        final = os.path.join(self.logdir, self.run_name)
        if os.path.lexists(final):  # The run's own (checked up front; again here against a racing run).
            catalog.check_tensorboard_run(self.logdir, self.run_name, self.out)
            shutil.rmtree(final)
        os.rename(self.temp, final)
