"""Tests of how images are shown: `Domain.display` per domain, and every picture of a run (PNGs, TensorBoard)."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from oipgraph.ascent.domain import STANDARDIZED, ValueRange
from oipgraph.outputs import examples, summaries
from oipgraph.outputs import writer as outputs
from oipgraph.outputs.run_pairs import RunPairs

RANGE = ValueRange(0.0, 255.0)
SIDE, INITS, STEPS, TOP_K = 8, 2, 10, 3
# A dull, nearly flat colour: shown linearly it stays a grey-blue; stretched per image it would span 0..255.
DULL_RGB = np.array([110.0, 128.0, 146.0], np.float32)


def linear_pixels(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """The expected display pixels of range images: round(255 * clip((x - low) / (high - low), 0, 1))."""
    return np.round(255 * np.clip((np.asarray(images, np.float64) - low) / (high - low), 0, 1))


def stretched_pixels(image: np.ndarray) -> np.ndarray:
    """The expected display pixels of a standardized image: round(255 * (x - min) / (max - min))."""
    image = np.asarray(image, np.float64)
    return np.round(255 * (image - image.min()) / (image.max() - image.min()))


def tile(picture: np.ndarray, index: int, columns: int, side: int, labelled: bool, left: int = 0) -> np.ndarray:
    """Image `index` of a `summaries.labelled_grid` picture (tiles `side` pixels, gap 2, labels above)."""
    label = max(7, side // 5) if labelled else 0
    top = (index // columns) * (side + label + 2) + label
    left += (index % columns) * (side + 2)
    return picture[top : top + side, left : left + side]


def upscaled(pixels: np.ndarray, scale: int) -> np.ndarray:
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


def decode(path: str) -> np.ndarray:
    return tf.io.decode_png(tf.io.read_file(path)).numpy()


def synthetic_run() -> tuple[dict[str, np.ndarray], examples.DatasetExamples]:
    """Per-pair arrays of 2 maps x 2 inits of 8x8 RGB images in 0..255 (integer values), and 3 dataset images per map.

    Map 0's OIPs are the dull colour plus noise of +-3; map 1's are 0 on the left half and 255 on the right.
    """
    rng = np.random.default_rng(0)
    pairs = 2 * INITS
    images = np.zeros([pairs, SIDE, SIDE, 3], np.float32)
    images[:INITS] = DULL_RGB + rng.integers(-3, 4, [INITS, SIDE, SIDE, 3])
    images[INITS:, :, SIDE // 2 :] = 255.0
    # Snapshots at steps 0 and 5: a near-grey image, then the OIP; the strategy's start differs from the first.
    near_grey = 127.0 + rng.integers(-2, 3, [pairs, SIDE, SIDE, 3]).astype(np.float32)
    run = {
        "map_index": np.repeat(np.arange(2, dtype=np.int32), INITS),
        "images": images,
        "loss": np.array([2.0, 1.0, 2.0, 1.0], np.float32),
        "loss_history": np.ones([pairs, STEPS], np.float32),
        "steps_run": np.full([pairs], STEPS, np.int32),
        "status": np.zeros([pairs], np.int32),
        "snapshots": np.stack([near_grey, images], axis=1),
        "snapshot_steps": np.tile(np.array([[0, 5]], np.int32), [pairs, 1]),
        "init_index": np.tile(np.arange(INITS, dtype=np.int32), 2),
        "seed_stream": np.arange(pairs, dtype=np.int64),
        "strategy": np.array(["random"] * pairs),
        "start_images": np.full([pairs, SIDE, SIDE, 3], 60.0, np.float32),
        "fired": np.ones([pairs], bool),
    }
    found = examples.DatasetExamples(
        indices=np.array([[0, 1, 2], [3, 4, 5]], np.int64),
        values=np.array([[1.0, 0.5, 0.2], [1.0, 0.5, 0.2]], np.float32),
        images=rng.integers(0, 256, [2, TOP_K, SIDE, SIDE, 3]).astype(np.float32),
        names=[[f"images[{index}]" for index in range(begin, begin + TOP_K)] for begin in (0, 3)],
        num_images=6,
        source="synthetic",
    )
    return run, found


class DomainDisplayTest(tf.test.TestCase):
    def test_standardized_display_stretches_each_image(self):
        image = np.random.default_rng(1).normal(size=[4, 4, 3]).astype(np.float32)
        flat = np.full([4, 4, 3], 0.3, np.float32)
        shown = STANDARDIZED.display(np.stack([image, 10 * image + 5, flat]))
        self.assertEqual(shown.dtype, np.float32)
        self.assertAllClose(shown[0], (image - image.min()) / (image.max() - image.min()))
        self.assertAllClose(shown[1], shown[0])  # Each image's own contrast: scale and offset do not show.
        self.assertAllEqual(shown[2], np.full([4, 4, 3], 0.5))

    def test_value_range_display_is_linear_and_clipped(self):
        values = np.array([-10.0, 0.0, 63.75, 127.5, 255.0, 300.0], np.float32).reshape(1, 1, 6, 1)
        shown = RANGE.display(values)
        self.assertEqual(shown.dtype, np.float32)
        self.assertAllClose(shown.reshape(-1), [0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
        self.assertAllClose(ValueRange(-1.0, 1.0).display(np.zeros([1, 2, 2, 1])), np.full([1, 2, 2, 1], 0.5))
        # A dull colour keeps its colour (a per-image stretch would give 0, 0.5, 1), and no image is stretched.
        dull = np.tile(DULL_RGB, [2, 3, 3, 1])
        self.assertAllClose(RANGE.display(dull), dull / 255)
        self.assertAllEqual(summaries.to_display(np.full([1, 2, 2, 1], 127.5), RANGE)[0, 0, 0], [128, 128, 128])


class RunPicturesTest(tf.test.TestCase):
    """The PNGs and TensorBoard images of a run, written by `outputs.write_outputs` from synthetic arrays."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pairs, cls.found = synthetic_run()
        cls.root = tempfile.mkdtemp()
        for name, domain in (("range", RANGE), ("standardized", STANDARDIZED)):
            out = os.path.join(cls.root, name)
            os.makedirs(out)
            header = {"seed": 0, "command": f"oipgraph --input_range={domain.name}"}
            pairs = RunPairs.from_arrays(cls.pairs)
            outputs.write_outputs(out, os.path.join(out, "tb"), "run", pairs, INITS, header, domain, cls.found)

    def events(self, name: str) -> event_accumulator.EventAccumulator:
        run_dir = os.path.join(self.root, name, "tb", "run")
        events = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
        events.Reload()
        return events

    def test_range_pngs_show_pixel_values_linearly(self):
        images = self.pairs["images"]
        grid = decode(os.path.join(self.root, "range", "grid.png"))
        side = SIDE * outputs.GRID_SCALE
        for row in range(2):
            expected = upscaled(linear_pixels(images[row * INITS], 0, 255), outputs.GRID_SCALE)
            self.assertAllEqual(tile(grid, row, 2, side, labelled=True), expected)
        oip = tile(grid, 0, 2, side, labelled=True)
        self.assertBetween(int(oip.min()), 100, 160)  # The dull OIP looks dull, not stretched to 0..255.
        self.assertBetween(int(oip.max()), 100, 160)
        self.assertAllEqual(tile(grid, 1, 2, side, labelled=True)[:, : side // 2], np.zeros([side, side // 2, 3]))
        self.assertAllEqual(tile(grid, 1, 2, side, labelled=True)[:, side // 2 :], np.full([side, side // 2, 3], 255))
        # maps/map_000.png: the OIPs, a gap, then the dataset examples, all on the same linear scale.
        picture = decode(os.path.join(self.root, "range", "maps", "map_000.png"))
        scale, side = outputs.MAP_PNG_SCALE, SIDE * outputs.MAP_PNG_SCALE
        for init in range(INITS):
            expected = upscaled(linear_pixels(images[init], 0, 255), scale)
            self.assertAllEqual(tile(picture, init, INITS, side, labelled=False), expected)
        examples_left = INITS * (side + 2) + 3 * scale
        for rank in range(TOP_K):
            expected = upscaled(linear_pixels(self.found.images[0, rank], 0, 255), scale)
            self.assertAllEqual(tile(picture, rank, TOP_K, side, labelled=False, left=examples_left), expected)

    def test_range_tensorboard_images_show_pixel_values_linearly(self):
        events, images = self.events("range"), self.pairs["images"]

        def card(tag: str, step: int = 0) -> list[np.ndarray]:
            [event] = [event for event in events.Tensors(tag) if event.step == step]
            return [tf.io.decode_png(png).numpy() for png in event.tensor_proto.string_val[2:]]

        # tf.summary.image turns [0, 1] into 0..255 by truncation: within 1 of the rounded pixels.
        self.assertAllClose(card("map_000/1_start")[0], linear_pixels(self.pairs["start_images"][0], 0, 255), atol=1)
        frames = {0: self.pairs["snapshots"][0, 0], 5: images[0], STEPS: images[0]}
        for step, image in frames.items():
            self.assertAllClose(card("map_000/2_ascent", step)[0], linear_pixels(image, 0, 255), atol=1)
        for init, shown in enumerate(card("map_000/4_variants")):
            self.assertAllClose(shown, linear_pixels(images[init], 0, 255), atol=1)
        page = card("layer/oips")[0]
        side = SIDE * outputs.TENSORBOARD_GRID_SCALE
        for row in range(2):
            expected = upscaled(linear_pixels(images[row * INITS], 0, 255), outputs.TENSORBOARD_GRID_SCALE)
            self.assertAllEqual(tile(page, row, 4, side, labelled=True), expected)
        strip = card("map_000/5_dataset_examples")[0]
        self.assertAllEqual(strip, decode(os.path.join(self.root, "range", "maps", "map_000.png")))

    def test_standardized_pictures_stretch_each_image(self):
        images = self.pairs["images"]
        grid = decode(os.path.join(self.root, "standardized", "grid.png"))
        side = SIDE * outputs.GRID_SCALE
        oip = tile(grid, 0, 2, side, labelled=True)
        self.assertEqual((int(oip.min()), int(oip.max())), (0, 255))
        self.assertAllClose(oip, upscaled(stretched_pixels(images[0]), outputs.GRID_SCALE), atol=1)
        [event] = self.events("standardized").Tensors("map_000/2_ascent")[:1]
        first_frame = tf.io.decode_png(event.tensor_proto.string_val[2]).numpy()
        self.assertAllClose(first_frame, stretched_pixels(self.pairs["snapshots"][0, 0]), atol=1)


if __name__ == "__main__":
    tf.test.main()
