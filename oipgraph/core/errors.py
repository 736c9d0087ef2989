"""One error type for bad user input, and the absl entry point that turns it into exit code 2."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import numpy as np
from absl import app, flags

USAGE_EXIT_CODE = 2


class OIPGraphError(ValueError):
    """Bad user input: a flag value, file, layer or map that cannot be used.

    The message is one line that names the bad value; the command-line tools
    print it and exit with code 2, without a traceback.
    """


def is_positive_int(value: object) -> bool:
    """Whether `value` is a Python or NumPy integer (not a bool) > 0."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer)) and value > 0


def check_positive_int(name: str, value: object) -> int:
    """Returns `value` as an int, or raises OIPGraphError naming it if it is not an integer > 0."""
    if not is_positive_int(value):
        raise OIPGraphError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def fail(message: str) -> NoReturn:
    """Prints `PROGRAM: error: message` on stderr and exits with code 2."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "oipgraph"
    sys.stderr.write(f"{program}: error: {message}\n")
    sys.stderr.flush()
    sys.exit(USAGE_EXIT_CODE)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        fail(str(err))


def adopt_key_flags(module_name: str) -> None:
    """Makes the flags that `module_name` defines the program's key flags, so that `--help` lists them.

    absl's `--help` shows the key flags of the main module, named by
    `sys.argv[0]`; a console script's main module is a stub, so without this
    `--help` would list no flag of the tool (and `--helpfull` every absl flag).
    """
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main: Callable[[list[str]], None], flag_module: str | None = None) -> None:
    """`absl.app.run(main)`, with flag and `OIPGraphError` failures as one line and exit code 2.

    `--help` lists the flags of `flag_module` (default: the module that defines `main`), with their defaults.
    """
    adopt_key_flags(flag_module or main.__module__)

    def checked_main(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected positional argument(s): {' '.join(argv[1:])}")
        try:
            main(argv)
        except OIPGraphError as err:
            fail(str(err))

    app.run(checked_main, flags_parser=_parse_flags)
