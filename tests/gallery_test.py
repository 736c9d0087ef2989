"""The gallery (`OUT/index.html`) in a real browser, and `--labels` in every output of a run.

One `oipgraph` run on a small Keras 2 HDF5 model (`model.save("m.h5")`) with ImageNet-style labels and a
dataset; its page is opened in headless Chromium (`tests/browser.py`), where every image must load and
sorting, filtering and finding must show the cards in the order the catalog says. A synthetic page of 2048
maps checks that a wide layer's page opens within a generous bound and still sorts and filters.
"""

import json
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf
from browser import PRELUDE, chromium_or_skip, run_page
from helpers import load_arrays, run_command, seeded_conv, write_npz
from tensorboard.backend.event_processing import event_accumulator

from oipgraph.outputs import gallery

STATUS_ORDER = {"no_activation": 0, "completed": 1, "converged": 2}
LABELS = {"0": ["n01440764", "tench"], "1": ["n01443537", "gold<fish> & co"], "2": ["n01484850", "great white shark"]}
NAMES = ["tench", "gold<fish> & co", "great white shark"]

# Loads every image, then drives the controls and reports what the page shows.
BROWSE = r"""
(async () => {
  const images = [...document.images];
  for (const image of images) image.loading = "eager";
  await Promise.all(images.map((image) => image.complete ? null :
    new Promise((done) => { image.onload = done; image.onerror = done; })));
  const shown = {ready: Number(document.body.dataset.ready)};
  shown.images = images.map((image) => [image.getAttribute("src"), image.naturalWidth]);
  shown.names = [...document.querySelectorAll(".card .name")].map((name) => name.textContent);
  SCENARIO
  answer(shown);
})();
"""
SCENARIO = r"""
  shown.map = shownMaps();
  for (const key of ["loss", "ratio", "status", "map"]) { choose("sort", key); shown["sort_" + key] = shownMaps(); }
  for (const key of ["completed", "converged", "no_activation", "oip", "no_oip", "beats", "not_beats", "all"]) {
    choose("filter", key);
    shown["filter_" + key] = shownMaps();
  }
  choose("search", "WHITE");
  shown.search = shownMaps();
  choose("search", "");
  choose("sort", "ratio");
  choose("filter", "converged");
  shown.ratio_converged = shownMaps();
  shown.counter = document.getElementById("shown").textContent;
"""


def expected_views(records: list[dict]) -> dict[str, list[int]]:
    """What the page must show for each control of `SCENARIO`, from the catalog's records."""

    def order(key):
        return [r["map_index"] for r in sorted(records, key=key)]

    ratio = lambda r: (-(r["ratio"] if r["ratio"] is not None else -np.inf), r["map_index"])
    by_map = order(lambda r: r["map_index"])
    views = {
        "map": by_map,
        "sort_loss": order(lambda r: (-r["loss"], r["map_index"])),
        "sort_ratio": order(ratio),
        "sort_status": order(lambda r: (STATUS_ORDER[r["status"]], r["map_index"])),
        "sort_map": by_map,
        "filter_all": by_map,
        "filter_oip": [r["map_index"] for r in records if r["fired"]],
        "filter_no_oip": [r["map_index"] for r in records if not r["fired"]],
        "filter_beats": [r["map_index"] for r in records if r["beats_best_dataset_image"]],
        "filter_not_beats": [r["map_index"] for r in records if not r["beats_best_dataset_image"]],
        "search": [r["map_index"] for r in records if "white" in r.get("label", "").lower()],
        "ratio_converged": [r["map_index"] for r in sorted(records, key=ratio) if r["status"] == "converged"],
    }
    for status in STATUS_ORDER:
        views[f"filter_{status}"] = [r["map_index"] for r in records if r["status"] == status]
    return views


def assert_no_external_urls(test: tf.test.TestCase, page: str) -> None:
    with open(page, encoding="utf-8") as file:
        text = file.read()
    test.assertNotRegex(text, r"(?i)https?://|\"//|'//|url\(\s*['\"]?//")
    for link in re.findall(r'(?:src|href)="([^"]*)"', text):
        test.assertNotRegex(link, r"^(?:[a-z]+:|/)", msg="only relative links")


class GalleryRunTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp()
        inputs = keras.Input((12, 12, 1), name="image")
        x = seeded_conv(4, 3, "conv_a", seed=2, activation="relu")(inputs)
        x = keras.layers.Flatten(name="flat")(keras.layers.MaxPooling2D(2, name="pool")(x))
        outputs = keras.layers.Dense(
            3, activation="softmax", name="classes", kernel_initializer=keras.initializers.GlorotUniform(seed=3)
        )(x)
        cls.model_path = os.path.join(cls.root, "keras2_model.h5")
        keras.Model(inputs, outputs).save(cls.model_path)
        cls.labels = os.path.join(cls.root, "imagenet_class_index.json")
        with open(cls.labels, "w") as file:
            json.dump(LABELS, file)
        cls.out = os.path.join(cls.root, "run")
        cls.done = run_command(
            "oipgraph",
            f"--model={cls.model_path}",
            "--layer=classes",
            f"--labels={cls.labels}",
            f"--dataset={write_npz(cls.root)}",
            "--strategy=random",
            "--steps=30",
            f"--out={cls.out}",
        )

    def setUp(self):
        super().setUp()
        self.assertEqual(self.done.returncode, 0, self.done.stderr[-3000:])
        with open(os.path.join(self.out, "catalog.json")) as file:
            self.document = json.load(file)

    def test_labels_in_every_output(self):
        self.assertEqual([entry["label"] for entry in self.document["maps"]], NAMES)
        self.assertEqual(self.document["labels"], self.labels)
        self.assertAllEqual(load_arrays(os.path.join(self.out, "oips.npz"))["label"], NAMES)
        [run_dir] = [entry.path for entry in os.scandir(os.path.join(self.out, "tensorboard"))]
        events = event_accumulator.EventAccumulator(run_dir, size_guidance={"tensors": 0})
        events.Reload()
        table = tf.make_ndarray(events.Tensors("run/maps")[0].tensor_proto).item().decode()
        self.assertIn("| 2 | great white shark | ", table)
        self.assertEqual(events.SummaryMetadata("map_001/2_ascent").summary_description, NAMES[1])
        with open(os.path.join(self.out, "index.html"), encoding="utf-8") as file:
            page = file.read()
        self.assertIn("gold\\u003cfish> & co", page)  # Embedded JSON: no "<" that could end the script.
        self.assertNotIn("gold<fish>", page)

    def test_page_in_a_browser(self):
        chromium = chromium_or_skip(self)
        page = os.path.join(self.out, "index.html")
        assert_no_external_urls(self, page)
        shown, _ = run_page(chromium, page, PRELUDE + BROWSE.replace("SCENARIO", SCENARIO))
        # Per map: the OIP, its dataset examples and its ascent strip, each a PNG of the run that loads.
        self.assertLen(shown["images"], 3 * 3)
        for src, width in shown["images"]:
            self.assertGreater(width, 0, msg=src)
            self.assertTrue(os.path.isfile(os.path.join(self.out, src)), msg=src)
        self.assertEqual(
            sorted(src for src, _ in shown["images"]),
            sorted(f"maps/map_{k:03d}_{kind}.png" for k in range(3) for kind in ("oip", "examples", "steps")),
        )
        self.assertEqual(shown["names"], NAMES)  # Shown as text, not markup.
        for key, maps in expected_views(self.document["maps"]).items():
            self.assertEqual(shown[key], maps, msg=key)
        self.assertEqual(shown["counter"], f"{len(shown['ratio_converged'])} of 3 shown")


class MultiLayerRunTest(tf.test.TestCase):
    def test_all_layers_one_folder_each_and_a_top_page(self):
        root = self.get_temp_dir()
        inputs = keras.Input((10, 10, 1), name="image")
        x = seeded_conv(3, 3, "conv_a", seed=4, activation="relu")(inputs)
        outputs = keras.layers.Dense(2, name="logits")(keras.layers.Flatten(name="flat")(x))
        model_path = os.path.join(root, "two.keras")
        keras.Model(inputs, outputs).save(model_path)
        out = os.path.join(root, "all")
        args = [f"--model={model_path}", "--layer=all", "--strategy=random", "--steps=10", f"--out={out}"]
        done = run_command("oipgraph", *args)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertEqual(sorted(os.listdir(out)), ["conv_a", "index.html", "logits"])  # Flatten is left out.
        for layer in ("conv_a", "logits"):
            with open(os.path.join(out, layer, "catalog.json")) as file:
                self.assertEqual(json.load(file)["layer"], layer)
            self.assertTrue(os.path.isfile(os.path.join(out, layer, "index.html")))
        assert_no_external_urls(self, os.path.join(out, "index.html"))
        # --resume keeps the finished layers.
        again = run_command("oipgraph", *args, "--resume")
        self.assertEqual(again.returncode, 0, again.stderr[-3000:])
        self.assertIn("holds the finished run of layer logits; kept", again.stdout)
        chromium = chromium_or_skip(self)
        script = (
            PRELUDE
            + r"""
(async () => {
  const images = [...document.images];
  await Promise.all(images.map((image) => image.complete ? null :
    new Promise((done) => { image.onload = done; image.onerror = done; })));
  answer({links: [...document.querySelectorAll("td a:not(:has(img))")].map((a) => a.getAttribute("href")),
          images: images.map((image) => image.naturalWidth)});
})();
"""
        )
        shown, _ = run_page(chromium, os.path.join(out, "index.html"), script)
        self.assertEqual(shown["links"], ["conv_a/index.html", "logits/index.html"])
        self.assertLen(shown["images"], 2)
        self.assertAllGreater(shown["images"], 0)


class WideLayerPageTest(tf.test.TestCase):
    def test_2048_maps_open_fast_and_sort_and_filter(self):
        chromium = chromium_or_skip(self)
        out = self.get_temp_dir()
        os.makedirs(os.path.join(out, "maps"))
        rng = np.random.default_rng(5)
        statuses = rng.choice(list(STATUS_ORDER), 2048)
        records, pictures = [], []
        png = tf.io.encode_png(tf.zeros([28, 28, 3], tf.uint8)).numpy()
        for k, status in enumerate(statuses):
            fired = status != "no_activation"
            loss = float(rng.normal() * 10) if fired else 0.0
            ratio = None if k % 7 == 0 else float(rng.uniform(0, 3))
            records.append(
                {
                    "map_index": k,
                    "label": f"unit {k} name",
                    "status": str(status),
                    "fired": bool(fired),
                    "loss": loss,
                    "steps": 600,
                    "strategy": "random",
                    "ratio": ratio,
                    "best_dataset_loss": 1.0,
                    "beats_best_dataset_image": bool(fired and (ratio is None or ratio > 1)),
                    "dataset_top_indices": list(range(9)),
                }
            )
            picture = {**gallery.picture_names(k), "frame_steps": [0, 1, 2, 600]}
            picture["examples"] = picture["picture"].replace(".png", "_examples.png")
            for name in ("picture", "oip", "steps_png", "examples"):
                with open(os.path.join(out, picture[name]), "wb") as file:
                    file.write(png)
            pictures.append(picture)
        document = {"model": "wide.keras", "layer": "wide", "target_kind": "map", "maps": records}
        document["dataset_examples"] = {"num_images": 10, "oips_beating_best": 1, "median_ratio": 1.0}
        page = os.path.join(out, "index.html")
        with open(page, "w", encoding="utf-8") as file:
            file.write(gallery.layer_page(document, pictures, image_width=28))
        assert_no_external_urls(self, page)
        script = PRELUDE + "const shown = {ready: Number(document.body.dataset.ready)};" + SCENARIO + "answer(shown);"
        shown, seconds = run_page(chromium, page, script, budget_ms=0)
        # A functional bound, not a benchmark: the page (2048 cards) is ready within 10 s of its navigation.
        self.assertLess(shown["ready"], 10_000, f"ready after {shown['ready']} ms; browser ran {seconds:.1f} s")
        for key, maps in expected_views(records).items():
            self.assertEqual(shown[key], maps, msg=key)


if __name__ == "__main__":
    tf.test.main()
