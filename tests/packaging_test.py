"""The package list in pyproject.toml names every package, so that `pip install .` (not only -e) works."""

import os
import re

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PackagingTest(tf.test.TestCase):
    def test_every_subpackage_is_listed(self):
        with open(os.path.join(ROOT, "pyproject.toml")) as file:
            listed = set(re.findall(r'"([\w.]+)"', re.search(r"^packages = \[(.*?)\]", file.read(), re.M).group(1)))
        found = {"oipgraph.export"}  # Lives in export/, mapped by package-dir.
        for directory, _, names in os.walk(os.path.join(ROOT, "oipgraph")):
            if "__init__.py" in names:
                found.add(os.path.relpath(directory, ROOT).replace(os.sep, "."))
        self.assertEqual(listed, found)


if __name__ == "__main__":
    tf.test.main()
