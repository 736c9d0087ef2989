"""The files and TensorBoard summaries of a layer-wide run.

`write_outputs` turns the per-pair arrays of a run (map-major, one row per
(map, init) pair) into `grid.png`, `maps/map_NNN.png`, `oips.npz`,
TensorBoard summaries and, last, `catalog.json`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from oipgraph import catalog, examples, summaries, uniqueness
from oipgraph.ascent import STATUS_NAMES

START_KINDS = {
    "random": "multiscale",
    "fourier": "fourier",
    "coarse_to_fine": "multiscale_coarse_to_fine",
    "precursor": "precursor_pattern",
    "preactivation": "multiscale_preactivation",
}
GRID_SCALE = 3
MAP_PNG_SCALE = 4


def by_map(pairs: dict[str, np.ndarray], num_maps: int, inits: int) -> dict[str, np.ndarray]:
    """Reshapes per-pair arrays [M*K, ...] (map-major) into [M, K, ...]."""
    return {key: value.reshape(num_maps, inits, *value.shape[1:]) for key, value in pairs.items()}


def best_inits(loss: np.ndarray, fired: np.ndarray) -> np.ndarray:
    """Per map, the init with the highest loss among those that fired (init 0 if none did).

    Args:
        loss: float32 [M, K], the loss of each map's K OIPs.
        fired: bool [M, K], which of them are OIPs (`Objective.fired`).
    """
    return np.argmax(np.where(fired, loss, -np.inf), axis=1)


def catalog_entries(
    arrays: dict[str, np.ndarray], best: np.ndarray, scores: list[float | None], seed: int
) -> list[dict]:
    entries = []
    for row, map_index in enumerate(arrays["map_index"][:, 0]):

        def describe(init: int) -> dict:
            strategy = str(arrays["strategy"][row, init])
            return {
                "init_index": int(arrays["init_index"][row, init]),
                "status": STATUS_NAMES[int(arrays["status"][row, init])],
                "fired": bool(arrays["fired"][row, init]),
                "loss": float(arrays["loss"][row, init]),
                "steps": int(arrays["steps_run"][row, init]),
                "strategy": strategy,
                "start_kind": START_KINDS.get(strategy, strategy),
                "seed": seed,
                "seed_stream": int(arrays["seed_stream"][row, init]),
            }

        entry = {"map_index": int(map_index), **describe(int(best[row])), "uniqueness": scores[row]}
        if arrays["loss"].shape[1] > 1:
            entry["inits"] = [describe(init) for init in range(arrays["loss"].shape[1])]
        entries.append(entry)
    return entries


def write_tensorboard(
    logdir: str,
    run_name: str,
    arrays: dict[str, np.ndarray],
    best: np.ndarray,
    grid: np.ndarray,
    flag_text: str,
    example_strips: list[np.ndarray] | None = None,
) -> None:
    """Writes the run's summaries to a temporary folder, then renames it to LOGDIR/RUN_NAME.

    `example_strips[m]` (uint8 [h, w, 3], `examples.example_strip`), when given, becomes map m's `TAG/dataset_examples`.
    """
    os.makedirs(logdir, exist_ok=True)
    final = os.path.join(logdir, run_name)
    temp = tempfile.mkdtemp(dir=logdir, prefix=".tmp-")
    try:
        writer = tf.summary.create_file_writer(temp)
        with writer.as_default():
            tf.summary.text("run/flags", flag_text, step=0)
            tf.summary.image("layer/oip_grid", grid[None], step=0)
            rows = np.arange(len(best))
            tags = [f"map_{map_index:03d}" for map_index in arrays["map_index"][:, 0]]
            for row, tag in enumerate(tags):
                init = int(best[row])
                summaries.write_map_images(
                    tag,
                    arrays["start_images"][row, init],
                    arrays["snapshots"][row, init],
                    arrays["snapshot_steps"][row, init],
                    arrays["images"][row, init],
                    variants=arrays["images"][row] if arrays["images"].shape[1] > 1 else None,
                )
                if example_strips is not None:
                    description = "The OIP(s), then the top dataset images, best first"
                    tf.summary.image(
                        f"{tag}/dataset_examples", example_strips[row][None], step=0, description=description
                    )
            summaries.write_loss_curves([f"{tag}/loss" for tag in tags], arrays["loss_history"][rows, best])
        writer.close()
        if os.path.exists(final):  # Only a resumed run gets here (checked up front).
            shutil.rmtree(final)
        os.rename(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_outputs(
    out: str,
    logdir: str,
    run_name: str,
    pairs: dict[str, np.ndarray],
    inits: int,
    header: dict,
    found: examples.DatasetExamples | None = None,
) -> dict:
    """Writes PNGs, `oips.npz`, TensorBoard summaries and, last, `catalog.json`.

    With dataset examples `found` (rows: all maps of the layer), each map's PNG and TensorBoard image show
    its top dataset images beside its OIP(s), and the catalog and `oips.npz` get `examples.run_fields`.
    """
    num_maps = len(pairs["map_index"]) // inits
    arrays = by_map(pairs, num_maps, inits)
    best = best_inits(arrays["loss"], arrays["fired"])
    rows = np.arange(num_maps)
    # Starts where the map never fired are still noise: only OIPs take part in the score.
    scores = [uniqueness.uniqueness(arrays["images"][row][arrays["fired"][row]]) for row in rows]
    map_indices = [int(k) for k in arrays["map_index"][:, 0]]
    grid = summaries.labelled_grid(arrays["images"][rows, best], labels=map_indices, scale=GRID_SCALE)
    catalog.atomic_write_bytes(os.path.join(out, "grid.png"), summaries.png_bytes(grid))
    strips = None
    if found is not None:
        has_oip = arrays["fired"][rows, best]
        fields, dataset_summary, dataset_arrays = examples.run_fields(
            found, map_indices, arrays["loss"][rows, best], has_oip
        )
        strips = [examples.example_strip(arrays["images"][row], found.images[k]) for row, k in enumerate(map_indices)]
    os.makedirs(os.path.join(out, "maps"), exist_ok=True)
    for row, map_index in enumerate(map_indices):
        variants = summaries.labelled_grid(arrays["images"][row], columns=inits, scale=MAP_PNG_SCALE)
        picture = variants if strips is None else strips[row]
        catalog.atomic_write_bytes(os.path.join(out, "maps", f"map_{map_index:03d}.png"), summaries.png_bytes(picture))
    npz_arrays = dict(
        arrays,
        map_index=arrays["map_index"][:, 0],
        best_init=best,
        uniqueness=np.array([np.nan if s is None else s for s in scores]),
    )
    if found is not None:
        npz_arrays.update(dataset_arrays)
    catalog.atomic_save_npz(os.path.join(out, catalog.OIPS), npz_arrays)
    write_tensorboard(logdir, run_name, arrays, best, grid, header["command"], strips)
    document = {**header, "maps": catalog_entries(arrays, best, scores, header["seed"])}
    if found is not None:
        document["maps"] = [{**entry, **extra} for entry, extra in zip(document["maps"], fields)]
        document["dataset_examples"] = dataset_summary
    catalog.atomic_write_json(os.path.join(out, catalog.CATALOG), document)
    return document
