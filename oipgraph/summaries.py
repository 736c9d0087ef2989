"""Pictures of OIPs: contrast stretching, labelled grids, PNG bytes and TensorBoard summaries."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

# A 3x5 pixel font for map numbers in grid labels (tf.image has no text rendering).
_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111",
}  # fmt: skip
_GLYPH_HEIGHT, _GLYPH_WIDTH = 5, 3


def stretch_contrast(images: np.ndarray) -> np.ndarray:
    """Maps every image's own [min, max] to [0, 1] (flat images become 0.5).

    Args:
        images: float [N, H, W, C].
    """
    images = np.asarray(images, np.float32)
    low = images.min(axis=(1, 2, 3), keepdims=True)
    span = images.max(axis=(1, 2, 3), keepdims=True) - low
    return np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.5).astype(np.float32)


def to_display(images: np.ndarray, scale: int = 1) -> np.ndarray:
    """Contrast-stretched RGB uint8 images [N, H*scale, W*scale, 3] (grey maps repeated)."""
    stretched = stretch_contrast(images)
    if stretched.shape[-1] == 1:
        stretched = np.repeat(stretched, 3, axis=-1)
    pixels = np.round(stretched * 255).astype(np.uint8)
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
    images: np.ndarray, labels: list[int] | None = None, columns: int | None = None, scale: int = 3
) -> np.ndarray:
    """Tiles contrast-stretched images in a grid, each with its label above it.

    Args:
        images: float [N, H, W, C].
        labels: One number per image (e.g. its map index); None for no labels.
        columns: Tiles per row; default about sqrt(N).
        scale: Nearest-neighbour upscaling of each image.

    Returns:
        uint8 RGB [rows * tile_h, columns * tile_w, 3].
    """
    tiles = to_display(images, scale)
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


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 [H, W, C] image."""
    return tf.io.encode_png(tf.constant(image, tf.uint8)).numpy()


def write_map_images(
    tag: str,
    start_image: np.ndarray,
    snapshots: np.ndarray,
    snapshot_steps: np.ndarray,
    oip: np.ndarray,
    variants: np.ndarray | None = None,
) -> None:
    """Image summaries of one map into the default writer.

    Writes `TAG/start`, `TAG/snapshots` (one image per snapshot step), `TAG/oip`
    and, when given, `TAG/variants` (the OIPs of several start images).
    """
    tf.summary.image(f"{tag}/start", stretch_contrast(start_image[None]), step=0)
    tf.summary.image(
        f"{tag}/snapshots",
        stretch_contrast(snapshots),
        step=0,
        max_outputs=len(snapshots),
        description="Images after steps " + ", ".join(str(step) for step in snapshot_steps),
    )
    tf.summary.image(f"{tag}/oip", stretch_contrast(oip[None]), step=0)
    if variants is not None:
        tf.summary.image(f"{tag}/variants", stretch_contrast(variants), step=0, max_outputs=len(variants))


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
