"""Runs the suite with the TensorFlow kernels that oipgraph users get.

Importing oipgraph before TensorFlow lets it turn on TensorFlow's oneDNN kernels
(see oipgraph/__init__.py), as every oipgraph command does. Without this, the
first test module would load TensorFlow with its own default, and on CPUs where
that differs the suite would test other kernels than the ones that ship.
"""

import oipgraph  # noqa: F401  (must come before anything imports TensorFlow)


def pytest_collection_modifyitems(config, items):
    """Drops `test_session`, which every `tf.test.TestCase` inherits and pytest would report as a skip.

    It is TensorFlow's deprecated session helper ("Not a test."), not a test of this project.
    """
    items[:] = [item for item in items if item.name != "test_session"]
