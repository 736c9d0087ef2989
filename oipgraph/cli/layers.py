"""Runs of several layers (`--layer=A,B` or `--layer=all`): the layer list, their folders, the top gallery.

Each layer of a multi-layer run is a run of its own in `OUT/<layer>/` (`folder_name`: a nested model's
`outer/inner` becomes `outer__inner`), with its own catalog, gallery, lock and `--resume` progress. When all
are written, `OUT/index.html` links their galleries (`outputs.gallery.index_page`). `--resume` keeps the
layers that finished with the same settings and continues the others.
"""

from __future__ import annotations

import json
import os

import keras

from oipgraph.core.errors import OIPGraphError
from oipgraph.models import layer_lookup
from oipgraph.outputs import catalog, gallery
from oipgraph.outputs.run_progress import RunProgress

ALL = "all"
# Layers that `all` leaves out: their units are other layers' values (Flatten: the neurons of the maps below).
SKIPPED_BY_ALL = (keras.layers.InputLayer, keras.layers.Flatten, keras.layers.Reshape)


def is_multi_layer(text: str) -> bool:
    """Whether --layer names several layers ("all" or a comma-separated list)."""
    return text == ALL or "," in text


def layer_list(model: keras.Model, text: str) -> list[str]:
    """The layers --layer names: one, `A,B,...` (each checked when its ascent is built) or `all`.

    `all` is every target layer of the model in graph order (`layer_lookup.usable_layer_names`), without
    the input, Flatten and Reshape layers.

    Raises:
        OIPGraphError: an empty or repeated name in the list.
    """
    if text != ALL:
        names = [name.strip() for name in text.split(",")] if "," in text else [text]
        if any(not name for name in names):
            raise OIPGraphError(f"--layer={text!r} is malformed: an empty layer name")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise OIPGraphError(f"--layer={text!r} names layer {repeated[0]!r} twice")
        return names
    layers = dict(layer_lookup.graph_layers(model))
    return [name for name in layer_lookup.usable_layer_names(model) if not isinstance(layers[name], SKIPPED_BY_ALL)]


def folder_name(layer: str) -> str:
    """The folder of `layer` in a multi-layer run's OUT."""
    return layer.replace("/", "__")


def check_top_folder(out: str, labels: list[str] | None) -> None:
    """Fails if a multi-layer run cannot write OUT: --labels given, or OUT holds a one-layer run or a folder
    named `index.html`."""
    if labels is not None:
        raise OIPGraphError("--labels names the maps of one layer; pass it with a single --layer")
    progress = RunProgress(out)
    if progress.has_results():
        raise OIPGraphError(
            f"--out={out} holds a run of one layer; a run of several layers writes one folder per layer:"
            " choose another --out"
        )
    if os.path.isdir(os.path.join(out, gallery.INDEX)):
        raise OIPGraphError(f"--out={out} holds a folder named {gallery.INDEX} where the run writes its gallery")


def check_finished_settings(out: str, header: dict) -> None:
    """Fails unless the finished run in `out` (kept by a multi-layer --resume) has the settings of `header`."""
    with open(os.path.join(out, catalog.CATALOG)) as file:
        saved = json.load(file)
    saved = {**saved, "maps": [entry["map_index"] for entry in saved.get("maps", [])]}  # The catalog's records.
    for key in sorted(header):
        if saved.get(key) != header[key]:
            raise OIPGraphError(
                f"--resume with other settings: {key} of the finished run in {out} was {saved.get(key)!r}, now"
                f" {header[key]!r}; rerun with the saved settings or pass --overwrite to start over"
            )


def write_top_index(out: str, layer_runs: list[tuple[str, str]]) -> None:
    """Writes OUT/index.html atomically, linking each (layer folder, layer) run's gallery."""
    documents = []
    for folder, _ in layer_runs:
        with open(os.path.join(folder, catalog.CATALOG)) as file:
            documents.append((os.path.relpath(folder, out), json.load(file)))
    per_layer = ("maps", "dataset_examples", "layer", "objective", "neuron", "target_kind", "labels")
    header = {key: value for key, value in documents[0][1].items() if key not in per_layer}
    page = gallery.index_page(documents, header)
    catalog.atomic_write_bytes(os.path.join(out, gallery.INDEX), page.encode())
