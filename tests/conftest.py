"""Runs the suite with the TensorFlow kernels that oipgraph users get.

Importing oipgraph before TensorFlow lets it turn on TensorFlow's oneDNN kernels
(see oipgraph/__init__.py), as every oipgraph command does. Without this, the
first test module would load TensorFlow with its own default, and on CPUs where
that differs the suite would test other kernels than the ones that ship.
"""

import oipgraph  # noqa: F401  (must come before anything imports TensorFlow)


def pytest_collection_modifyitems(config, items):
    """Drops `test_session`, and puts the classes marked `heavy` first.

    `test_session` is TensorFlow's deprecated session helper ("Not a test."), which every `tf.test.TestCase`
    inherits and pytest would report as a skip; it is not a test of this project.

    pytest-xdist (`--dist loadscope --no-loadscope-reorder`, pyproject.toml) hands the test classes to its two
    workers in this order, one class to one worker. A class of a minute or more of CPU time that came last
    would run alone on one worker while the other waits; started first, the light classes fill in around it.
    The order within a class (and so its shared set-up) is kept: the sort is stable.
    """
    items[:] = [item for item in items if item.name != "test_session"]
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
