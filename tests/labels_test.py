"""The labels file of `--labels`: its three forms, its bounds and its one-line errors."""

import json
import os
from unittest import mock

import tensorflow as tf

from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError
from oipgraph.outputs.labels import check_count, load_labels


class LabelsTest(tf.test.TestCase):
    def write(self, name: str, content: str | bytes) -> str:
        path = os.path.join(self.get_temp_dir(), name)
        with open(path, "wb") as file:
            file.write(content.encode() if isinstance(content, str) else content)
        return path

    def test_the_three_forms(self):
        cases = {
            "lines.txt": ("cat\r\n  dog \n\nbird\n", ["cat", "dog", "", "bird"]),
            "list.json": (json.dumps(["cat", "dog"]), ["cat", "dog"]),
            "object.json": (json.dumps({"1": "dog", "0": "cat"}), ["cat", "dog"]),
            "imagenet.json": (
                json.dumps({str(k): [f"n{k:08d}", f"class {k}"] for k in range(12)}),
                [f"class {k}" for k in range(12)],
            ),
            "bom.txt": ("\ufeffgato\nperro", ["gato", "perro"]),
        }
        for name, (content, names) in cases.items():
            with self.subTest(name=name):
                self.assertEqual(load_labels(self.write(name, content)), names)

    def test_bad_files(self):
        long_name = "x" * (limits.MAX_LABEL_CHARS + 1)
        cases = [
            ("empty.txt", "", "the file holds no names"),
            ("latin1.txt", b"caf\xe9\n", r"not UTF-8 text \(byte 3\)"),
            ("broken.json", "[1, 2", "malformed JSON"),
            ("numbers.json", "[1, 2]", "name 0 is not one line of text: '1'"),
            ("keys.json", json.dumps({"0": "a", "x": "b"}), "keys must be the indices 0..1"),
            (
                "long.txt",
                f"a\n{long_name}\n",
                f"name 1 has 201 characters, above the limit of {limits.MAX_LABEL_CHARS}",
            ),
        ]
        for name, content, message in cases:
            with self.subTest(name=name), self.assertRaisesRegex(OIPGraphError, message):
                load_labels(self.write(name, content))
        with self.assertRaisesRegex(OIPGraphError, "labels file not found"):
            load_labels(os.path.join(self.get_temp_dir(), "missing.txt"))
        big = self.write("big.txt", "a\n" * 20)
        with (
            mock.patch.object(limits, "MAX_LABELS_FILE_BYTES", 16),
            self.assertRaisesRegex(OIPGraphError, "the file has 40 bytes, above the limit of 16"),
        ):
            load_labels(big)

    def test_count_must_match_the_layer(self):
        check_count(["a", "b"], 2, "Dense_2", "unit")
        with self.assertRaisesRegex(OIPGraphError, "--labels has 2 names, but layer Dense_2 has 10 units"):
            check_count(["a", "b"], 10, "Dense_2", "unit")


if __name__ == "__main__":
    tf.test.main()
