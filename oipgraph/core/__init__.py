"""What every layer of oipgraph uses: its error type and exit codes, the bounds of every size, Ctrl-C handling.

Modules:
    errors: `OIPGraphError`, the one-line usage errors (exit code 2) and the commands' entry wrapper.
    limits: the documented upper bound of every size a flag or a serving request controls.
    interrupts: Ctrl-C and SIGTERM recorded and raised between TensorFlow calls.
    progress: `Progress`, a live bar on a terminal and plain timed lines everywhere else.

Nothing here imports another oipgraph package.
"""

from oipgraph.core.errors import USAGE_EXIT_CODE, OIPGraphError

__all__ = ["USAGE_EXIT_CODE", "OIPGraphError"]
