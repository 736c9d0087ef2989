"""Pictures of OIPs: display pixels, labelled grids, PNG bytes and TensorBoard summaries.

Every picture shows its images as the model's input domain says (`Domain.display`): standardized
images contrast-stretched per image, range images linearly from [low, high] to 0..255.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from oipgraph.ascent.domain import Domain

# A 3x5 pixel font for map numbers in grid labels (tf.image has no text rendering).
_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111",
}  # fmt: skip
_GLYPH_HEIGHT, _GLYPH_WIDTH = 5, 3


def to_display(images: np.ndarray, domain: Domain, scale: int = 1) -> np.ndarray:
    """RGB uint8 [N, H*scale, W*scale, 3]: round(255 * domain.display(images)), grey images repeated to 3 channels.

    Args:
        images: float [N, H, W, C], images of `domain` (contrast-stretched if standardized, linear for a range).
        domain: The model's input domain.
        scale: Nearest-neighbour upscaling.
    """
    shown = domain.display(images)
    if shown.shape[-1] == 1:
        shown = np.repeat(shown, 3, axis=-1)
    pixels = np.round(shown * 255).astype(np.uint8)
    return pixels.repeat(scale, axis=1).repeat(scale, axis=2)


def render_label(text: str, height: int, width: int) -> np.ndarray:
    """A white-on-black uint8 [height, width, 3] strip with `text` (digits) centred, scaled to fit."""
    strip = np.zeros([height, width, 3], np.uint8)
    pixel = max(1, min((height - 2) // _GLYPH_HEIGHT, width // max(1, 4 * len(text))))
    glyph_h, glyph_w = _GLYPH_HEIGHT * pixel, _GLYPH_WIDTH * pixel
    total_width = len(text) * (glyph_w + pixel) - pixel
    top, left = (height - glyph_h) // 2, max(0, (width - total_width) // 2)
    for position, char in enumerate(text):
        glyph = np.array([int(bit) for bit in _DIGITS[char]], np.uint8).reshape(_GLYPH_HEIGHT, _GLYPH_WIDTH)
        block = glyph.repeat(pixel, axis=0).repeat(pixel, axis=1) * 255
        x = left + position * (glyph_w + pixel)
        if x + glyph_w <= width:
            strip[top : top + glyph_h, x : x + glyph_w] = block[..., None]
    return strip


def labelled_grid(
    images: np.ndarray, domain: Domain, labels: list[int] | None = None, columns: int | None = None, scale: int = 3
) -> np.ndarray:
    """Tiles images, shown as `domain.display` says (`to_display`), in a grid, each with its label above it.

    Args:
        images: float [N, H, W, C], images of `domain`.
        domain: The model's input domain.
        labels: One number per image (e.g. its map index); None for no labels.
        columns: Tiles per row; default about sqrt(N).
        scale: Nearest-neighbour upscaling of each image.

    Returns:
        uint8 RGB [rows * tile_h, columns * tile_w, 3] (`tile_grid`).
    """
    return tile_grid(to_display(images, domain, scale), labels, columns)


def tile_grid(tiles: np.ndarray, labels: list[int] | None = None, columns: int | None = None) -> np.ndarray:
    """Display tiles uint8 [N, H, W, 3] in a grid on a dark background, 2 px apart, each under its label.

    Returns:
        uint8 RGB [rows * (H + label + 2), columns * (W + 2), 3], label = max(7, H // 5) (0 without `labels`).
    """
    count, height, width, _ = tiles.shape
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    label_height = max(7, height // 5) if labels is not None else 0
    gap = 2
    tile_h, tile_w = height + label_height + gap, width + gap
    grid = np.full([rows * tile_h, columns * tile_w, 3], 40, np.uint8)
    for index in range(count):
        top, left = (index // columns) * tile_h, (index % columns) * tile_w
        if labels is not None:
            grid[top : top + label_height, left : left + width] = render_label(str(labels[index]), label_height, width)
        grid[top + label_height : top + label_height + height, left : left + width] = tiles[index]
    return grid


def fit_scale(size: int, scale: int, max_side: int) -> int:
    """The nearest-neighbour factor for images `size` px tall: `scale`, less where that passes `max_side` (>= 1)."""
    return max(1, min(scale, max_side // size))


def fit_tiles(pixels: np.ndarray, scale: int, max_side: int) -> np.ndarray:
    """Display pixels uint8 [N, H, W, 3] as grid tiles of at most about `max_side` px.

    Images of at most `max_side` px are repeated nearest-neighbour by `fit_scale(H, scale, max_side)`; larger
    ones are reduced by an area average, by f = ceil(H / max_side), to ceil(H / f) x ceil(W / f) (at scale 3 the
    grid of a deep layer's 512 maps at 224 x 224 was 18,584 px wide; the OIPs at full size are in `maps/`).
    """
    height, width = pixels.shape[1:3]
    if height <= max_side:
        factor = fit_scale(height, scale, max_side)
        return pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    factor = -(-height // max_side)
    size = (-(-height // factor), -(-width // factor))
    reduced = tf.image.resize(tf.constant(pixels, tf.float32), size, method="area", antialias=True)
    return np.round(reduced.numpy()).clip(0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 [H, W, C] image."""
    return tf.io.encode_png(tf.constant(image, tf.uint8)).numpy()


# Tag names under each map's group, in reading order (TensorBoard sorts the cards of a group by tag).
START_TAG, ASCENT_TAG, LOSS_TAG, VARIANTS_TAG, EXAMPLES_TAG = (
    "1_start",
    "2_ascent",
    "3_loss",
    "4_variants",
    "5_dataset_examples",
)
# Maps per page of the layer grid: 4 x 4 tiles stay legible at TensorBoard's card width.
GRID_PAGE_MAPS = 16


def ascent_frames(snapshots: np.ndarray, snapshot_steps: np.ndarray, steps_run: int, oip: np.ndarray):
    """The (step, image) frames of one pair's ascent: snapshots before it stopped, then the OIP at `steps_run`.

    Args:
        snapshots: float [F, H, W, C], the images at `snapshot_steps` (int [F]).
        steps_run: The pair's gradient evaluations; the OIP is the image after them.
        oip: float [H, W, C], the final image.
    """
    frames = [(int(step), image) for step, image in zip(snapshot_steps, snapshots) if step < steps_run]
    return frames + [(int(steps_run), oip)]


def write_map_images(
    tag: str,
    start_image: np.ndarray,
    snapshots: np.ndarray,
    snapshot_steps: np.ndarray,
    steps_run: int,
    oip: np.ndarray,
    domain: Domain,
    variants: np.ndarray | None = None,
    description: str | None = None,
) -> None:
    """Image summaries of one map into the default writer, each image shown as `domain.display` says.

    `TAG/2_ascent` is one card whose step slider walks through the ascent: the
    image at each snapshot step the pair ran (step 0 is the ascent's start),
    and the OIP at the step the pair stopped. `TAG/1_start` is the strategy's
    start image where it differs from the ascent's (coarse-to-fine and
    pre-activation starts are optimized before the final ascent);
    `TAG/4_variants` the OIPs of several start images, when given. `description` (e.g. the map's label)
    is shown on the ascent card.
    """
    if not np.array_equal(start_image, snapshots[0]):
        tf.summary.image(f"{tag}/{START_TAG}", domain.display(start_image[None]), step=0)
    for step, image in ascent_frames(snapshots, snapshot_steps, steps_run, oip):
        tf.summary.image(f"{tag}/{ASCENT_TAG}", domain.display(image[None]), step=step, description=description)
    if variants is not None:
        tf.summary.image(f"{tag}/{VARIANTS_TAG}", domain.display(variants), step=0, max_outputs=len(variants))


def write_grid_pages(tag: str, tiles: np.ndarray, labels: list[int]) -> int:
    """The layer's OIPs as labelled grids of `GRID_PAGE_MAPS` maps, page k at step k of one card.

    Args:
        tiles: uint8 [N, h, w, 3], each map's display tile (`fit_tiles`).
        labels: The maps' indices.

    Returns:
        The number of pages.
    """
    pages = range(0, len(tiles), GRID_PAGE_MAPS)
    for page, begin in enumerate(pages):
        chunk = slice(begin, begin + GRID_PAGE_MAPS)
        grid = tile_grid(tiles[chunk], labels=labels[chunk], columns=4)
        first, last = labels[chunk][0], labels[chunk][-1]
        tf.summary.image(tag, grid[None], step=page, description=f"Maps {first}..{last}; the step is the page")
    return len(pages)


def status_table(rows: list[dict]) -> str:
    """A markdown table of the maps' results: map, (label,) status, fired, loss, steps, strategy."""
    labelled = any("label" in row for row in rows)
    lines = [
        "| map |" + (" label |" if labelled else "") + " status | OIP | loss | steps | strategy |",
        "| --- |" + (" --- |" if labelled else "") + " --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        label = " " + row.get("label", "").replace("|", "\\|") + " |" if labelled else ""
        lines.append(
            f"| {row['map_index']} |{label} {row['status']} | {'yes' if row['fired'] else 'no'} | {row['loss']:.4g}"
            f" | {row['steps']} | {row['strategy']} |"
        )
    return "\n".join(lines)


def write_loss_curves(tags: list[str], histories: np.ndarray) -> None:
    """Scalar summaries `tags[i]` at steps 0..T-1 from `histories` [N, T], into the default writer.

    One compiled loop writes all curves: tens of thousands of eager
    `tf.summary.scalar` calls would take longer than the ascent itself.
    """

    # tf.summary.write keeps the tags as given (tf.summary.scalar would prefix the loop's name scope).
    metadata = scalar_metadata.create_summary_metadata(display_name=None, description=None).SerializeToString()

    @tf.function
    def write(values: tf.Tensor) -> None:
        for step in tf.range(tf.shape(values, out_type=tf.int64)[1]):
            for row, tag in enumerate(tags):
                tf.summary.write(tag, values[row, step], step=step, metadata=metadata)

    write(tf.constant(histories, tf.float32))
