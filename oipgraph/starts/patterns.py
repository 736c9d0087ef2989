"""The precursor scan's start patterns: every g x g grid of cell values, in every colour.

Pattern i of K colours and |V|^(g*g) cell patterns:

1. Colour i // |V|^(g*g) (gray first, so the gray patterns keep their
   indices); cells from the base-|V| digits of i % |V|^(g*g), cell (0, 0)
   the most significant and cell (g-1, g-1) the least (row-major), cell
   (row, col) taking `values[digit]`.
2. The g x g cells are resized (bicubic, antialiased) to the image size,
   multiplied by the colour (a vector over the channels; gray, all ones,
   copies the cells to every channel) and standardized per image. The |V|
   constant gray patterns (all cells equal) are exactly the zero image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from oipgraph.core.errors import OIPGraphError, check_positive_int

DEFAULT_GRID = 3
DEFAULT_VALUES = (0.2, 0.5, 0.8)
MAX_PATTERNS = 2**31 - 1


def default_colors(channels: int) -> tuple[tuple[float, ...], ...]:
    """The pattern colours for images with `channels` channels: gray alone (see `check_colors`).

    Also for RGB models: on random RGB CNNs, colour sets (primaries, opponent colours) fired 3-5 more of
    162 dark maps for 1.6-1.7x auto's CPU time, fewer maps per CPU second than gray (BENCHMARKS.md, "RGB
    precursor colours"); `StrategySettings.precursor_colors` asks for them.
    """
    return ((1.0,) * channels,)


def check_colors(colors: Sequence[Sequence[float]], channels: int) -> tuple[tuple[float, ...], ...]:
    """Validates pattern colours: at least one, each `channels` finite values, not all zero, distinct.

    Raises:
        OIPGraphError: naming the bad colour.
    """
    try:
        colors = tuple(tuple(float(value) for value in color) for color in colors)
    except (TypeError, ValueError):
        raise OIPGraphError(f"colors must be a list of per-channel value lists, got {colors!r}") from None
    if not colors:
        raise OIPGraphError("colors must hold at least one colour, got an empty list")
    for color in colors:
        if len(color) != channels or not all(math.isfinite(value) for value in color) or not any(color):
            raise OIPGraphError(f"colour {list(color)} must be {channels} finite values, not all zero")
    if len(set(colors)) != len(colors):
        raise OIPGraphError(f"colors must be distinct, got {[list(color) for color in colors]}")
    return colors


def check_values(values: Sequence[float]) -> tuple[float, ...]:
    """Validates the cell values: at least one, finite, distinct.

    Raises:
        OIPGraphError: naming the bad value.
    """
    try:
        values = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        raise OIPGraphError(f"values must be a list of numbers, got {values!r}") from None
    if not values:
        raise OIPGraphError("values must hold at least one cell value, got an empty list")
    bad = [value for value in values if not math.isfinite(value)]
    if bad:
        raise OIPGraphError(f"values must be finite numbers, got {bad[0]!r}")
    if len(set(values)) != len(values):
        raise OIPGraphError(f"values must be distinct, got {list(values)}")
    return values


class GridPatterns:
    """All grid patterns of one grid, value set and colour set, for images of one shape.

    Attributes:
        grid: Cells per side.
        values: Cell values V.
        colors: The colours, one value per image channel each.
        cell_patterns: |V|^(grid * grid), the patterns of one colour.
        num_patterns: len(colors) * cell_patterns.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        grid: int = DEFAULT_GRID,
        values: Sequence[float] = DEFAULT_VALUES,
        colors: Sequence[Sequence[float]] | None = None,
    ):
        """Checks and builds the pattern set.

        Args:
            image_shape: (H, W, C) of the images.
            grid: Cells per side (> 0).
            values: The distinct, finite values a cell can take (at least one).
            colors: The colours, each one value per image channel; None for `default_colors(C)`.

        Raises:
            OIPGraphError: a bad grid, values or colours, or more than 2^31 - 1 patterns.
        """
        self.image_shape = tuple(image_shape)
        self.grid = check_positive_int("grid", grid)
        self.values = check_values(values)
        channels = self.image_shape[-1]
        self.colors = check_colors(default_colors(channels) if colors is None else colors, channels)
        self.cell_patterns = len(self.values) ** (self.grid * self.grid)
        self.num_patterns = len(self.colors) * self.cell_patterns
        if self.num_patterns > MAX_PATTERNS:
            raise OIPGraphError(
                f"grid {self.grid} with {len(self.values)} values and {len(self.colors)} colours gives "
                f"{len(self.colors)} * {len(self.values)}^{self.grid * self.grid} patterns;"
                f" at most {MAX_PATTERNS} are supported"
            )
        cells = self.grid * self.grid
        base = len(self.values)
        self._values = tf.constant(self.values, tf.float32)
        self._colors = tf.constant(self.colors, tf.float32)
        self._digit_weights = tf.constant([base ** (cells - 1 - cell) for cell in range(cells)], tf.int32)

    @property
    def repeated_patterns(self) -> int:
        """How many patterns repeat another's image: per colour, the |V| constant patterns give one image."""
        return len(self.colors) * (len(self.values) - 1)

    def digits(self, pattern_index: tf.Tensor) -> tf.Tensor:
        """int32 [B, grid * grid]: the base-|V| cell digits of `pattern_index`, most significant (cell (0, 0)) first."""
        pattern_index = tf.convert_to_tensor(pattern_index, tf.int32) % self.cell_patterns
        return (pattern_index[:, None] // self._digit_weights) % len(self.values)

    def cell_values(self, pattern_index: tf.Tensor) -> tf.Tensor:
        """float32 [B, grid, grid]: the cell values of patterns `pattern_index` (int32 [B])."""
        return tf.reshape(tf.gather(self._values, self.digits(pattern_index)), [-1, self.grid, self.grid])

    def standardized(self, pattern_index: tf.Tensor) -> tf.Tensor:
        """float32 [B, H, W, C]: the images of patterns `pattern_index` (int32 [B]), standardized per image.

        Raises:
            InvalidArgumentError: an index outside [0, num_patterns).
        """
        pattern_index = tf.convert_to_tensor(pattern_index, tf.int32)
        checks = [
            tf.debugging.assert_non_negative(pattern_index, message="pattern_index must be >= 0; got pattern_index"),
            tf.debugging.assert_less(
                pattern_index,
                self.num_patterns,
                message=f"pattern_index must be < {self.num_patterns}; got pattern_index",
            ),
        ]
        with tf.control_dependencies(checks):
            digits = self.digits(pattern_index)
        cells = tf.reshape(tf.gather(self._values, digits), [-1, self.grid, self.grid, 1])
        height, width, _ = self.image_shape
        if (self.grid, self.grid) != (height, width):
            cells = tf.image.resize(cells, [height, width], method="bicubic", antialias=True)
        color_index = pattern_index // self.cell_patterns
        images = tf.image.per_image_standardization(cells * tf.gather(self._colors, color_index)[:, None, None, :])
        # A constant gray pattern standardizes to exactly 0; computed, it is resize and rounding noise
        # of size 1e-7 whose direction would decide where its first ascent step jumps.
        gray = tf.gather(tf.constant([len(set(color)) == 1 for color in self.colors]), color_index)
        constant = tf.reduce_all(tf.equal(digits, digits[:, :1]), axis=1) & gray
        return tf.where(constant[:, None, None, None], tf.zeros_like(images), images)
