"""One error type for bad user input, and the absl entry point that turns it into exit code 2."""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from absl import app, flags

USAGE_EXIT_CODE = 2


class OIPGraphError(ValueError):
    """Bad user input: a flag value, file, layer or map that cannot be used.

    The message is one line that names the bad value; the command-line tools
    print it and exit with code 2, without a traceback.
    """


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


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)`, with flag and `OIPGraphError` failures as one line and exit code 2."""

    def checked_main(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected positional argument(s): {' '.join(argv[1:])}")
        try:
            main(argv)
        except OIPGraphError as err:
            fail(str(err))

    app.run(checked_main, flags_parser=_parse_flags)
