"""The files and TensorBoard summaries of a layer-wide run.

`write_outputs` turns the per-pair arrays of a run (map-major, one row per
(map, init) pair) into `grid.png`, `maps/map_NNN.png` (and the gallery's
pictures, `outputs.gallery`), `oips.npz`, TensorBoard summaries, the gallery
`index.html` and, last, `catalog.json`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from oipgraph.ascent import STATUS_NAMES
from oipgraph.ascent.domain import Domain
from oipgraph.ascent.parameterizations import PARAMETERIZATIONS, Parameterization
from oipgraph.outputs import catalog, examples, gallery, summaries, uniqueness

# The start images of each strategy; RANDOM is the noise of the run's parameterization (`start_noise`).
RANDOM = "{noise}"
START_KINDS = {
    "random": RANDOM,
    "fourier": "fourier",
    "coarse_to_fine": "multiscale_coarse_to_fine",
    "precursor": "precursor_pattern",
    "preactivation": RANDOM + "_preactivation",
}


def start_kind(strategy: str, param: str | None) -> str:
    """What a pair's start image was, from its strategy and the run's parameterization (`--param`)."""
    noise = PARAMETERIZATIONS.get(param, Parameterization).start_noise
    return START_KINDS.get(strategy, strategy).format(noise=noise)


GRID_SCALE = 3
TENSORBOARD_GRID_SCALE = 4
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
    arrays: dict[str, np.ndarray],
    best: np.ndarray,
    scores: list[float | None],
    seed: int,
    labels: list[str] | None = None,
    param: str | None = None,
) -> list[dict]:
    """Per map its best OIP's record (all inits' under `inits` when there are several); `label` from `labels`.

    Args:
        labels: The names of all maps of the layer (`outputs.labels`), indexed by map; None: no `label` key.
        param: The run's parameterization (its random starts' noise: `start_kind`).
    """
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
                "start_kind": start_kind(strategy, param),
                "seed": seed,
                "seed_stream": int(arrays["seed_stream"][row, init]),
            }

        entry = {"map_index": int(map_index)}
        if labels is not None:
            entry["label"] = labels[int(map_index)]
        entry.update(describe(int(best[row])), uniqueness=scores[row])
        if arrays["loss"].shape[1] > 1:
            entry["inits"] = [describe(init) for init in range(arrays["loss"].shape[1])]
        entries.append(entry)
    return entries


def write_tensorboard(
    logdir: str,
    run_name: str,
    arrays: dict[str, np.ndarray],
    best: np.ndarray,
    entries: list[dict],
    flag_text: str,
    out: str,
    domain: Domain,
    example_strips: list[np.ndarray] | None = None,
) -> None:
    """Writes the run's summaries to a temporary folder, then renames it to LOGDIR/RUN_NAME.

    The run folder records its owner, the real path of `out` (`catalog.TENSORBOARD_OWNER`); an existing
    LOGDIR/RUN_NAME is replaced only if it is this `out`'s own. Layout: `run/flags`, `run/maps` (a table
    of every map's status, loss, steps and strategy), `layer/oips` (the grid in pages of 16 maps, page k
    at step k), and per map `map_NNN/2_ascent` (the step slider walks through the ascent),
    `map_NNN/3_loss`, and where they apply `1_start`, `4_variants` and `5_dataset_examples`
    (`example_strips[m]`, uint8 [h, w, 3] from `examples.example_strip`, when given). Images are shown as
    the model's input `domain` says (`Domain.display`).
    """
    os.makedirs(logdir, exist_ok=True)
    final = os.path.join(logdir, run_name)
    temp = tempfile.mkdtemp(dir=logdir, prefix=".tmp-")
    try:
        catalog.make_private_temp_public(temp, directory=True)
        catalog.atomic_write_bytes(os.path.join(temp, catalog.TENSORBOARD_OWNER), os.path.realpath(out).encode())
        writer = tf.summary.create_file_writer(temp)
        with writer.as_default():
            tf.summary.text("run/flags", flag_text, step=0)
            tf.summary.text("run/maps", summaries.status_table(entries), step=0)
            rows = np.arange(len(best))
            map_indices = [int(map_index) for map_index in arrays["map_index"][:, 0]]
            summaries.write_grid_pages(
                "layer/oips", arrays["images"][rows, best], map_indices, TENSORBOARD_GRID_SCALE, domain
            )
            tags = [f"map_{map_index:03d}" for map_index in map_indices]
            for row, tag in enumerate(tags):
                init = int(best[row])
                summaries.write_map_images(
                    tag,
                    arrays["start_images"][row, init],
                    arrays["snapshots"][row, init],
                    arrays["snapshot_steps"][row, init],
                    int(arrays["steps_run"][row, init]),
                    arrays["images"][row, init],
                    domain,
                    variants=arrays["images"][row] if arrays["images"].shape[1] > 1 else None,
                    description=entries[row].get("label"),
                )
                if example_strips is not None:
                    description = "The OIP(s), then the top dataset images, best first"
                    tf.summary.image(
                        f"{tag}/{summaries.EXAMPLES_TAG}", example_strips[row][None], step=0, description=description
                    )
            loss_tags = [f"{tag}/{summaries.LOSS_TAG}" for tag in tags]
            summaries.write_loss_curves(loss_tags, arrays["loss_history"][rows, best])
        writer.close()
        if os.path.lexists(final):  # The run's own (checked up front; again here against a racing run).
            catalog.check_tensorboard_run(logdir, run_name, out)
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
    domain: Domain,
    found: examples.DatasetExamples | None = None,
    labels: list[str] | None = None,
) -> dict:
    """Writes PNGs, `oips.npz`, TensorBoard summaries, the gallery `index.html` and, last, `catalog.json`.

    Every picture shows the images as the model's input `domain` says (`Domain.display`: standardized
    images contrast-stretched per image, range images linearly from [low, high] to 0..255).

    With dataset examples `found` (rows: all maps of the layer), each map's PNG and TensorBoard image show
    its top dataset images beside its OIP(s), and the catalog and `oips.npz` get `examples.run_fields`.
    With `labels` (names of all maps of the layer), the catalog (`label`), `oips.npz` (`label`), TensorBoard
    (the maps table, each ascent card's description) and the gallery show each map's name; the PNGs keep
    the index (their digit font has no letters).
    """
    num_maps = len(pairs["map_index"]) // inits
    arrays = by_map(pairs, num_maps, inits)
    best = best_inits(arrays["loss"], arrays["fired"])
    rows = np.arange(num_maps)
    # Starts where the map never fired are still noise: only OIPs take part in the score.
    scores = [uniqueness.uniqueness(arrays["images"][row][arrays["fired"][row]]) for row in rows]
    map_indices = [int(k) for k in arrays["map_index"][:, 0]]
    grid = summaries.labelled_grid(arrays["images"][rows, best], domain, labels=map_indices, scale=GRID_SCALE)
    catalog.atomic_write_bytes(os.path.join(out, "grid.png"), summaries.png_bytes(grid))
    strips = None
    if found is not None:
        has_oip = arrays["fired"][rows, best]
        fields, dataset_summary, dataset_arrays = examples.run_fields(
            found, map_indices, arrays["loss"][rows, best], has_oip
        )
        strips = [
            examples.example_strip(arrays["images"][row], found.images[k], domain) for row, k in enumerate(map_indices)
        ]
    os.makedirs(os.path.join(out, catalog.MAPS_DIR), exist_ok=True)
    pictures = []
    for row, map_index in enumerate(map_indices):
        variants = summaries.labelled_grid(arrays["images"][row], domain, columns=inits, scale=MAP_PNG_SCALE)
        picture = variants if strips is None else strips[row]
        catalog.atomic_write_bytes(
            os.path.join(out, catalog.MAPS_DIR, f"map_{map_index:03d}.png"), summaries.png_bytes(picture)
        )
        init = int(best[row])
        frames = summaries.ascent_frames(
            arrays["snapshots"][row, init],
            arrays["snapshot_steps"][row, init],
            int(arrays["steps_run"][row, init]),
            arrays["images"][row, init],
        )
        top_images = None if found is None else found.images[map_index]
        pictures.append(
            gallery.write_map_pictures(out, map_index, arrays["images"][row, init], frames, domain, top_images)
        )
    npz_arrays = dict(
        arrays,
        map_index=arrays["map_index"][:, 0],
        best_init=best,
        uniqueness=np.array([np.nan if s is None else s for s in scores]),
    )
    if found is not None:
        npz_arrays.update(dataset_arrays)
    if labels is not None:
        npz_arrays["label"] = np.array([labels[k] for k in map_indices], dtype=str)
    catalog.atomic_save_npz(os.path.join(out, catalog.OIPS), npz_arrays)
    entries = catalog_entries(arrays, best, scores, header["seed"], labels, header.get("param"))
    write_tensorboard(logdir, run_name, arrays, best, entries, header["command"], out, domain, strips)
    document = {**header, "maps": entries}
    if found is not None:
        document["maps"] = [{**entry, **extra} for entry, extra in zip(document["maps"], fields)]
        document["dataset_examples"] = dataset_summary
    page = gallery.layer_page(document, pictures, image_width=arrays["images"].shape[-2])
    catalog.atomic_write_bytes(os.path.join(out, gallery.INDEX), page.encode())
    catalog.atomic_write_json(os.path.join(out, catalog.CATALOG), document)
    return document
