"""Writing a run's outputs a block of pairs at a time: merging saved groups, the staged `.npz`, large grids.

A deep layer's images at 224 x 224 are GBs, so the writer draws each saved group's maps and stages the image
arrays of `oips.npz` on disk (`outputs.staged_npz`); whatever order the groups come in, the outputs must equal
those written from the whole run in memory.
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from oipgraph.ascent.domain import ValueRange
from oipgraph.outputs import summaries, writer
from oipgraph.outputs.catalog import load_npz
from oipgraph.outputs.run_pairs import IMAGE_KEYS, RunPairs
from oipgraph.outputs.run_progress import RunProgress, merge_pairs
from oipgraph.outputs.staged_npz import StagedNpz

MAPS, INITS, SIDE, STEPS = 5, 2, 6, 4
DOMAIN = ValueRange(0.0, 255.0)


def synthetic_pairs(maps: list[int]) -> dict[str, np.ndarray]:
    """The per-pair arrays of `maps` x INITS pairs (run order), each map's values its own."""
    pairs = len(maps) * INITS
    rng = np.random.default_rng(sum(maps))
    map_index = np.repeat(np.array(maps, np.int32), INITS)
    return {
        "map_index": map_index,
        "init_index": np.tile(np.arange(INITS, dtype=np.int32), len(maps)),
        "images": rng.uniform(0, 255, [pairs, SIDE, SIDE, 3]).astype(np.float32),
        "start_images": rng.uniform(0, 255, [pairs, SIDE, SIDE, 3]).astype(np.float32),
        "snapshots": rng.uniform(0, 255, [pairs, 2, SIDE, SIDE, 3]).astype(np.float32),
        "snapshot_steps": np.tile(np.array([[0, 2]], np.int32), [pairs, 1]),
        "loss": rng.uniform(1, 2, [pairs]).astype(np.float32),
        "loss_history": rng.uniform(0, 1, [pairs, STEPS]).astype(np.float32),
        "steps_run": np.full([pairs], STEPS, np.int32),
        "status": np.zeros([pairs], np.int32),
        "seed_stream": np.arange(pairs, dtype=np.int64) + 100 * map_index,
        "strategy": np.array(["random"] * pairs),
        "fired": rng.random(pairs) > 0.2,
    }


class StagedNpzTest(tf.test.TestCase):
    def test_rows_in_any_order_load_as_savez_compressed_wrote_them(self):
        folder = self.get_temp_dir()
        images = np.random.default_rng(0).random([3, 2, 4, 4, 3], dtype=np.float32)
        small = {"loss": np.arange(3, dtype=np.float32), "strategy": np.array(["random", "precursor", "a"])}
        rows = images.reshape(6, 4, 4, 3)
        with StagedNpz(folder, (3, 2)) as staged:
            staged.put("images", np.array([4, 5, 0, 1]), rows[[4, 5, 0, 1]])
            staged.put("images", np.array([3, 2]), rows[[3, 2]])
            staged.save(os.path.join(folder, "staged.npz"), small)
        np.savez_compressed(os.path.join(folder, "whole.npz"), images=images, **small)
        staged, whole = load_npz(os.path.join(folder, "staged.npz")), load_npz(os.path.join(folder, "whole.npz"))
        self.assertEqual(sorted(staged), sorted(whole))
        for key, value in whole.items():
            self.assertEqual(staged[key].dtype, value.dtype, msg=key)
            self.assertAllEqual(staged[key], value, msg=key)
        self.assertEqual(sorted(os.listdir(folder)), ["staged.npz", "whole.npz"], "the staging folder is removed")

    def test_a_row_never_written_or_written_twice_is_refused_and_nothing_is_saved(self):
        folder = self.get_temp_dir()
        rows = np.zeros([4, 2], np.float32)
        with StagedNpz(folder, (4,)) as staged:
            staged.put("images", np.array([0, 1]), rows[:2])
            with self.assertRaisesRegex(ValueError, "written twice"):
                staged.put("images", np.array([1, 2]), rows[1:3])
            with self.assertRaisesRegex(ValueError, "2 of 4 rows were never written"):
                staged.save(os.path.join(folder, "oips.npz"), {})
        self.assertEqual(os.listdir(folder), [])


class BlockWritingTest(tf.test.TestCase):
    def write(self, out: str, pairs: RunPairs) -> dict:
        header = {"seed": 0, "command": "oipgraph --maps=0-4"}
        return writer.write_outputs(out, os.path.join(out, "tb"), "run", pairs, INITS, header, DOMAIN)

    def test_saved_groups_in_any_order_write_what_the_whole_run_writes(self):
        run_maps = [4, 0, 3, 1, 2]  # The run's order (as --maps lists them); groups saved as maps became final.
        whole = synthetic_pairs(run_maps)
        root = self.get_temp_dir()
        progress = RunProgress(os.path.join(root, "saved"))
        progress.begin({"seed": 0}, resume=False)
        for group_maps in ([3, 1], [2], [4, 0]):
            rows = np.concatenate([np.flatnonzero(whole["map_index"] == m) for m in group_maps])
            progress.save_group({key: value[rows] for key, value in whole.items() if key != "fired"})
        saved = progress.load_run(run_maps)
        fired = {m: whole["fired"][whole["map_index"] == m] for m in run_maps}
        saved.small["fired"] = np.concatenate([fired[m] for m in run_maps])
        self.assertEqual([len(rows) for rows, _ in saved.blocks()], [4, 2, 4], "one block per saved group")
        documents = [
            self.write(os.path.join(root, "saved"), saved),
            self.write(os.path.join(root, "memory"), RunPairs.from_arrays(whole)),
        ]
        self.assertEqual(documents[0], documents[1])
        self.assertEqual([entry["map_index"] for entry in documents[0]["maps"]], run_maps)
        arrays = [load_npz(os.path.join(root, name, "oips.npz")) for name in ("saved", "memory")]
        self.assertEqual(sorted(arrays[0]), sorted(arrays[1]))
        for key in arrays[1]:
            self.assertAllEqual(arrays[0][key], arrays[1][key], msg=key)
        self.assertAllEqual(arrays[0]["images"], whole["images"].reshape(MAPS, INITS, SIDE, SIDE, 3))
        for name in ("grid.png", "index.html", "maps/map_003.png", "maps/map_003_steps.png"):
            with (
                open(os.path.join(root, "saved", name), "rb") as first,
                open(os.path.join(root, "memory", name), "rb") as second,
            ):
                self.assertEqual(first.read(), second.read(), msg=name)
        with open(os.path.join(root, "saved", "catalog.json")) as file:
            self.assertEqual(json.load(file)["maps"], documents[0]["maps"])
        self.assertEqual(
            [name for name in os.listdir(os.path.join(root, "saved")) if name.startswith(".tmp")], [], "no leftovers"
        )

    def test_blocks_that_miss_a_map_write_no_catalog(self):
        whole = synthetic_pairs([0, 1])
        small = {key: value for key, value in whole.items() if key not in IMAGE_KEYS}
        first_map = {key: whole[key][:INITS] for key in IMAGE_KEYS}
        pairs = RunPairs(small, lambda: iter([(np.arange(INITS), first_map)]))
        out = tempfile.mkdtemp(dir=self.get_temp_dir())
        with self.assertRaisesRegex(ValueError, r"no images of maps \[1\]"):
            self.write(out, pairs)
        self.assertFalse(os.path.exists(os.path.join(out, "catalog.json")))
        self.assertFalse(os.path.exists(os.path.join(out, "tb", "run")))


class GridTilesTest(tf.test.TestCase):
    def test_small_images_are_scaled_up_to_at_most_the_largest_tile(self):
        pixels = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
        self.assertAllEqual(summaries.fit_tiles(pixels, 3, 128), pixels.repeat(3, axis=1).repeat(3, axis=2))
        self.assertEqual(summaries.fit_tiles(np.zeros([1, 32, 32, 3], np.uint8), 4, 128).shape, (1, 128, 128, 3))
        self.assertEqual(summaries.fit_tiles(np.zeros([1, 100, 100, 3], np.uint8), 3, 128).shape, (1, 100, 100, 3))

    def test_large_images_are_averaged_down(self):
        # 224 px: halved (a 2x2 block of 0 and 255 averages to 127.5, rounded to 128); 300 px: a third.
        checker = np.indices([224, 224]).sum(axis=0) % 2 * 255
        pixels = np.repeat(checker[None, :, :, None], 3, axis=-1).astype(np.uint8)
        reduced = summaries.fit_tiles(pixels, 3, 128)
        self.assertEqual(reduced.shape, (1, 112, 112, 3))
        self.assertAllEqual(reduced, np.full([1, 112, 112, 3], 128, np.uint8))
        self.assertEqual(summaries.fit_tiles(np.zeros([2, 300, 150, 3], np.uint8), 3, 128).shape, (2, 100, 50, 3))

    def test_a_large_layer_grid_stays_viewable(self):
        """512 maps at 224 x 224: 2,622 x 3,128 px (at scale 3 it was 18,584 x 15,502 px)."""
        tiles = summaries.fit_tiles(np.zeros([1, 224, 224, 3], np.uint8), writer.GRID_SCALE, writer.GRID_MAX_TILE)
        grid = summaries.tile_grid(np.repeat(tiles, 512, axis=0), labels=list(range(512)))
        self.assertEqual(grid.shape, (3128, 2622, 3))


class MergePairsTest(tf.test.TestCase):
    def test_groups_merge_in_the_runs_map_order_with_padded_histories_and_whole_strings(self):
        def group(maps: list[int], strategy: str, steps: int) -> dict[str, np.ndarray]:
            count = len(maps)
            return {
                "map_index": np.array(maps, np.int32),
                "loss": np.arange(count, dtype=np.float32) + 10 * maps[0],
                "loss_history": np.zeros((count, steps), np.float32),
                "strategy": np.array([strategy] * count),
                "snapshots": np.random.default_rng(maps[0]).random((count, 2, 4, 4, 1), dtype=np.float32),
            }

        groups = [group([3, 1, 1], "random", 2), group([0, 2], "preactivation", 4)]
        expected = {
            key: np.concatenate([groups[0][key], groups[1][key]])[[3, 1, 2, 4, 0]]
            for key in ("map_index", "loss", "snapshots")
        }
        merged = merge_pairs(groups, [0, 1, 2, 3])
        for key, value in expected.items():
            self.assertAllEqual(merged[key], value, msg=key)
        self.assertEqual(merged["strategy"].tolist(), ["preactivation", "random", "random", "preactivation", "random"])
        # The random group's 2-step histories are widened to 4 steps with each pair's final loss (31: map 1, init 0).
        self.assertAllEqual(merged["loss_history"][1], [0, 0, 31, 31])
        self.assertEqual(groups, [{}, {}], "the groups' arrays are taken out as they are merged")


if __name__ == "__main__":
    tf.test.main()
