"""The files and TensorBoard summaries of a layer-wide run.

`write_outputs` turns the per-pair arrays of a run (map-major, one row per (map, init) pair; `RunPairs`) into
`maps/map_NNN.png` (and the gallery's pictures, `outputs.gallery`), `grid.png`, `oips.npz`, TensorBoard
summaries (`tensorboard_run`), the gallery `index.html` and, last, `catalog.json`. It draws the maps a block
of pairs at a time (a saved group) and stages the image arrays of `oips.npz` on disk (`staged_npz`), so it
holds one block's images, not the run's: at 224 x 224 a deep layer's 512 maps are 3 GB of images.
"""

from __future__ import annotations

import os

import numpy as np

from oipgraph.ascent import STATUS_NAMES
from oipgraph.ascent.domain import Domain
from oipgraph.ascent.parameterizations import PARAMETERIZATIONS, Parameterization
from oipgraph.outputs import catalog, examples, gallery, summaries, uniqueness
from oipgraph.outputs.run_pairs import IMAGE_KEYS, RunPairs
from oipgraph.outputs.staged_npz import StagedNpz
from oipgraph.outputs.tensorboard_run import TensorBoardRun

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


# Nearest-neighbour scales of small images, and the most pixels a tile of a layer's grid (grid.png, TensorBoard's
# pages) may have: larger images are reduced there (`summaries.fit_tiles`); the map PNGs never shrink.
GRID_SCALE = 3
TENSORBOARD_GRID_SCALE = 4
MAP_PNG_SCALE = 4
GRID_MAX_TILE = 128


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


def write_outputs(
    out: str,
    logdir: str,
    run_name: str,
    pairs: RunPairs,
    inits: int,
    header: dict,
    domain: Domain,
    found: examples.DatasetExamples | None = None,
    labels: list[str] | None = None,
) -> dict:
    """Writes the map PNGs, `grid.png`, `oips.npz`, TensorBoard summaries, `index.html` and, last, `catalog.json`.

    Every picture shows the images as the model's input `domain` says (`Domain.display`: standardized
    images contrast-stretched per image, range images linearly from [low, high] to 0..255).

    Args:
        pairs: The run's pairs, `fired` among its small arrays (`Objective.fired`).
        inits: Pairs per map.
        header: The catalog's run fields; `seed` and `command` (the flags, shown in TensorBoard) among them.
        found: With dataset examples (rows: all maps of the layer), each map's PNG and TensorBoard image show
            its top dataset images beside its OIP(s), and the catalog and `oips.npz` get `examples.run_fields`.
        labels: Names of all maps of the layer: the catalog (`label`), `oips.npz` (`label`), TensorBoard
            (the maps table, each ascent card's description) and the gallery show each map's name; the PNGs
            keep the index (their digit font has no letters).
    """
    num_maps = len(pairs) // inits
    arrays = by_map(pairs.small, num_maps, inits)
    best = best_inits(arrays["loss"], arrays["fired"])
    map_indices = [int(k) for k in arrays["map_index"][:, 0]]
    os.makedirs(os.path.join(out, catalog.MAPS_DIR), exist_ok=True)
    scores, pictures, grid_tiles, board_tiles = ([None] * num_maps for _ in range(4))
    with StagedNpz(out, (num_maps, inits)) as staged, TensorBoardRun(logdir, run_name, out, domain) as board:
        for rows, images in pairs.blocks():
            image_width = images["images"].shape[-2]
            for key in IMAGE_KEYS:
                staged.put(key, rows, images[key])
            for first in range(0, len(rows), inits):
                row = int(rows[first]) // inits
                pair_images = {key: value[first : first + inits] for key, value in images.items()}
                label = None if labels is None else labels[map_indices[row]]
                scores[row], pictures[row], shown = _write_map(
                    out, board, arrays, row, best[row], pair_images, domain, found, label
                )
                grid_tiles[row] = summaries.fit_tiles(shown, GRID_SCALE, GRID_MAX_TILE)[0]
                board_tiles[row] = summaries.fit_tiles(shown, TENSORBOARD_GRID_SCALE, GRID_MAX_TILE)[0]
        missing = [map_indices[row] for row in range(num_maps) if pictures[row] is None]
        if missing:
            raise ValueError(f"the run's blocks hold no images of maps {missing}")
        grid = summaries.tile_grid(np.stack(grid_tiles), labels=map_indices)
        catalog.atomic_write_bytes(os.path.join(out, catalog.GRID), summaries.png_bytes(grid))
        npz_arrays = dict(
            arrays,
            map_index=arrays["map_index"][:, 0],
            best_init=best,
            uniqueness=np.array([np.nan if s is None else s for s in scores]),
        )
        if found is not None:
            has_oip = arrays["fired"][np.arange(num_maps), best]
            fields, dataset_summary, dataset_arrays = examples.run_fields(
                found, map_indices, arrays["loss"][np.arange(num_maps), best], has_oip
            )
            npz_arrays.update(dataset_arrays)
        if labels is not None:
            npz_arrays["label"] = np.array([labels[k] for k in map_indices], dtype=str)
        staged.save(os.path.join(out, catalog.OIPS), npz_arrays)
        entries = catalog_entries(arrays, best, scores, header["seed"], labels, header.get("param"))
        histories = arrays["loss_history"][np.arange(num_maps), best]
        board.write_layer(header["command"], entries, np.stack(board_tiles), map_indices, histories)
        board.publish()
    document = {**header, "maps": entries}
    if found is not None:
        document["maps"] = [{**entry, **extra} for entry, extra in zip(document["maps"], fields)]
        document["dataset_examples"] = dataset_summary
    page = gallery.layer_page(document, pictures, image_width=image_width)
    catalog.atomic_write_bytes(os.path.join(out, gallery.INDEX), page.encode())
    catalog.atomic_write_json(os.path.join(out, catalog.CATALOG), document)
    return document


def _write_map(
    out: str,
    board: TensorBoardRun,
    arrays: dict[str, np.ndarray],
    row: int,
    init: int,
    images: dict[str, np.ndarray],
    domain: Domain,
    found: examples.DatasetExamples | None,
    label: str | None,
) -> tuple[float | None, dict, np.ndarray]:
    """One map's pictures: `maps/map_NNN.png`, the gallery's (`gallery.write_map_pictures`) and its TensorBoard cards.

    Args:
        arrays: The run's small arrays by map ([M, K, ...], `by_map`); `row` is the map's row, `init` its best.
        images: The map's `IMAGE_KEYS` arrays, [K, ...] each.

    Returns:
        The map's uniqueness score (None for fewer than 2 OIPs), the gallery's record of its pictures, and
        its best OIP's display pixels, uint8 [1, H, W, 3].
    """
    map_index = int(arrays["map_index"][row, 0])
    oips = images["images"]
    # Starts where the map never fired are still noise: only OIPs take part in the score.
    score = uniqueness.uniqueness(oips[arrays["fired"][row]])
    scale = summaries.fit_scale(oips.shape[1], MAP_PNG_SCALE, GRID_MAX_TILE)
    top_images = None if found is None else found.images[map_index]
    if found is None:
        strip, picture = None, summaries.labelled_grid(oips, domain, columns=len(oips), scale=scale)
    else:
        strip = picture = examples.example_strip(oips, top_images, domain, scale=scale)
    catalog.atomic_write_bytes(
        os.path.join(out, catalog.MAPS_DIR, f"map_{map_index:03d}.png"), summaries.png_bytes(picture)
    )
    best = {key: images[key][init] for key in IMAGE_KEYS}
    best.update(snapshot_steps=arrays["snapshot_steps"][row, init], steps_run=int(arrays["steps_run"][row, init]))
    frames = summaries.ascent_frames(best["snapshots"], best["snapshot_steps"], best["steps_run"], best["images"])
    record = gallery.write_map_pictures(out, map_index, best["images"], frames, domain, top_images)
    board.write_map(map_index, best, oips if len(oips) > 1 else None, label, strip)
    return score, record, summaries.to_display(best["images"][None], domain)
