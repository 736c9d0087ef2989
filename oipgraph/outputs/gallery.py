"""The run's gallery: `OUT/index.html`, a static page to browse a layer's maps, and the PNGs its cards show.

Per map the gallery shows three pictures that `write_map_pictures` writes next to `maps/map_NNN.png`, each
at the image's own size (the page scales them, nearest-neighbour where they are small):
`maps/map_NNN_oip.png` (the map's best OIP), `maps/map_NNN_steps.png` (the ascent of that OIP: the image
at each snapshot step it ran, then the OIP; `summaries.ascent_frames`) and, with a dataset,
`maps/map_NNN_examples.png` (its top dataset images, best first). `layer_page` turns the run's catalog
document into the page (`gallery_page.LAYER_PAGE`), with the run's data embedded as JSON; `index_page` is a
multi-layer run's top page. No server, network or framework: the page is one file with relative links.
"""

from __future__ import annotations

import html
import json
import math
import os
import re

import numpy as np

from oipgraph.ascent.domain import Domain
from oipgraph.outputs import catalog, gallery_page, summaries

INDEX = catalog.GALLERY
# Pictures narrower than this (CSS pixels) are scaled up nearest-neighbour (`image-rendering: pixelated`).
OIP_DISPLAY_WIDTH = 128
STRIP_DISPLAY_WIDTH = 282
# Header rows: catalog key -> shown name, in this order (a key missing from the document is left out).
SETTINGS = (
    ("model", "model"),
    ("model_sha256", "model SHA-256"),
    ("layer", "layer"),
    ("objective", "objective"),
    ("neuron", "neuron"),
    ("preset", "preset"),
    ("strategy", "strategy"),
    ("steps", "steps"),
    ("epsilon", "epsilon"),
    ("seed", "seed"),
    ("inits_per_map", "inits per map"),
    ("input_range", "input range"),
    ("jitter", "jitter"),
    ("scale", "scale"),
    ("dataset", "dataset"),
    ("labels", "labels"),
    ("command", "flags"),
)


def picture_names(map_index: int) -> dict[str, str]:
    """The relative paths (from OUT) of a map's pictures: `picture`, `oip`, `steps_png`, `examples`."""
    stem = f"{catalog.MAPS_DIR}/map_{map_index:03d}"
    return {"picture": f"{stem}.png", "oip": f"{stem}_oip.png", "steps_png": f"{stem}_steps.png", "examples": None}


def write_map_pictures(
    out: str,
    map_index: int,
    oip: np.ndarray,
    frames: list[tuple[int, np.ndarray]],
    domain: Domain,
    top_images: np.ndarray | None,
) -> dict:
    """Writes a map's gallery pictures (module docstring) atomically; returns their names and the frames' steps.

    Args:
        out: The run's folder (`maps/` exists).
        map_index: The map's index in its layer.
        oip: float [H, W, C], the map's best OIP, an image of `domain`.
        frames: (step, float [H, W, C]) of its ascent, `summaries.ascent_frames`.
        domain: The model's input domain (`summaries.to_display`).
        top_images: float [k, H, W, C], its top dataset images in `domain`; None without a dataset.

    Returns:
        `picture_names(map_index)` (with `examples` set where written) plus `frame_steps`, the frames' steps.
    """
    names = picture_names(map_index)
    catalog.atomic_write_bytes(
        os.path.join(out, names["oip"]), summaries.png_bytes(summaries.to_display(oip[None], domain)[0])
    )
    strip = summaries.labelled_grid(np.stack([image for _, image in frames]), domain, columns=len(frames), scale=1)
    catalog.atomic_write_bytes(os.path.join(out, names["steps_png"]), summaries.png_bytes(strip))
    if top_images is not None:
        names["examples"] = names["picture"].replace(".png", "_examples.png")
        examples = summaries.labelled_grid(top_images, domain, columns=len(top_images), scale=1)
        catalog.atomic_write_bytes(os.path.join(out, names["examples"]), summaries.png_bytes(examples))
    return {**names, "frame_steps": [step for step, _ in frames]}


def finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def layer_data(document: dict, pictures: list[dict], image_width: int) -> dict:
    """The page's embedded data: one record per map (catalog fields plus `pictures`), and display settings.

    Args:
        document: The run's catalog document (`write_outputs`), `maps` in the run's order.
        pictures: Per map, `write_map_pictures`' answer.
        image_width: The model's input width in pixels.
    """
    has_dataset = "dataset_examples" in document
    records = []
    for entry, picture in zip(document["maps"], pictures):
        record = {
            "map": entry["map_index"],
            "label": entry.get("label"),
            "status": entry["status"],
            "fired": entry["fired"],
            "loss": finite_or_none(entry["loss"]),
            "steps": entry["steps"],
            "strategy": entry["strategy"],
            **picture,
        }
        if has_dataset:
            record.update(
                ratio=finite_or_none(entry["ratio"]),
                beats=entry["beats_best_dataset_image"],
                best_dataset_loss=finite_or_none(entry["best_dataset_loss"]),
            )
        records.append(record)
    frames = max((len(picture["frame_steps"]) for picture in pictures), default=1)
    top_k = len(document["maps"][0].get("dataset_top_indices", [])) if document["maps"] else 0
    strip_tiles = max(frames, top_k)
    return {
        "kind": document.get("target_kind", "map"),
        "has_dataset": has_dataset,
        "top_k": top_k,
        "oip_pixelated": image_width < OIP_DISPLAY_WIDTH,
        "strips_pixelated": strip_tiles * (image_width + 2) < STRIP_DISPLAY_WIDTH * 2,
        "maps": records,
    }


def settings_table(document: dict) -> str:
    """The run's settings (`SETTINGS`) as a wrapping list of name/value pairs; the flags on a line of their own."""
    items, command = [], ""
    for key, name in SETTINGS:
        value = document.get(key)
        if value is None or (key in ("jitter", "scale") and not value):
            continue
        if key == "command":
            command = f'<p class="flags">flags: <code>{html.escape(str(value))}</code></p>'
            continue
        text = html.escape(str(value)[:16] + "…") if key == "model_sha256" else html.escape(str(value))
        items.append(f'<span><span class="key">{html.escape(name)}</span> {text}</span>')
    return '<div class="settings">' + "".join(items) + "</div>" + command


def counts_line(document: dict) -> str:
    """The run's counts: maps, OIPs, statuses and (with a dataset) how many OIPs beat the best dataset image."""
    entries = document["maps"]
    kind = document.get("target_kind", "map")
    statuses = {}
    for entry in entries:
        statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
    parts = [
        f"<b>{sum(entry['fired'] for entry in entries)}</b> of {len(entries)} {kind}s have an OIP",
        ", ".join(f"{name} {count}" for name, count in sorted(statuses.items())),
    ]
    summary = document.get("dataset_examples")
    if summary:
        median = summary.get("median_ratio")
        median_text = f" (median ratio {median:.3g})" if median is not None else ""
        parts.append(
            f"<b>{summary['oips_beating_best']}</b> beat the best of {summary['num_images']} dataset images"
            + median_text
        )
    return '<p class="counts">' + " · ".join(parts) + "</p>"


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with every `__KEY__` replaced by `values[KEY]`, in one pass (values are not searched again)."""
    return re.sub(r"__([A-Z]+)__", lambda match: values.get(match.group(1), match.group(0)), template)


def embedded_json(value: dict) -> str:
    """JSON for a `<script type="application/json">`: no `<` (so no `</script>`), no NaN."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def layer_page(document: dict, pictures: list[dict], image_width: int) -> str:
    """The layer's `index.html` (`gallery_page.LAYER_PAGE`), from the catalog document and its pictures."""
    model = os.path.basename(str(document.get("model", "")))
    title = f"oipgraph · {document.get('layer', '')} of {model}"
    return fill(
        gallery_page.LAYER_PAGE,
        {
            "TITLE": html.escape(title),
            "STYLE": gallery_page.STYLE,
            "HEADER": settings_table(document) + counts_line(document),
            "DATA": embedded_json(layer_data(document, pictures, image_width)),
            "SCRIPT": gallery_page.SCRIPT,
        },
    )


def index_page(layers: list[tuple[str, dict]], header: dict) -> str:
    """A multi-layer run's top `index.html`: per layer (folder name, catalog document) a row and a link.

    Args:
        layers: (folder relative to the top page, the layer's catalog document), in the run's order.
        header: The settings shown above the table (`SETTINGS` keys; `layer` is left out).
    """
    rows = []
    for folder, document in layers:
        entries = document["maps"]
        link = html.escape(f"{folder}/{INDEX}")
        statuses: dict[str, int] = {}
        for entry in entries:
            statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
        summary = document.get("dataset_examples")
        beats = f"{summary['oips_beating_best']}" if summary else "–"
        rows.append(
            f'<tr><td><a href="{link}">{html.escape(document["layer"])}</a></td>'
            f"<td>{sum(entry['fired'] for entry in entries)} of {len(entries)}</td>"
            f"<td>{html.escape(', '.join(f'{name} {count}' for name, count in sorted(statuses.items())))}</td>"
            f"<td>{beats}</td>"
            f'<td><a href="{link}"><img src="{html.escape(folder)}/{catalog.GRID}" alt="grid" loading="lazy"></a></td>'
            "</tr>"
        )
    model = os.path.basename(str(header.get("model", "")))
    shown = {key: value for key, value in header.items() if key != "layer"}
    return fill(
        gallery_page.INDEX_PAGE,
        {
            "TITLE": html.escape(f"oipgraph · {len(layers)} layers of {model}"),
            "STYLE": gallery_page.STYLE,
            "HEADER": settings_table(shown),
            "ROWS": "\n".join(rows),
        },
    )
