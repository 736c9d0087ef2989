"""Runs `oipgraph` with a signal sent to itself at a deterministic point (a test helper, not part of the package).

    python interrupted_command.py SIGNAL AFTER_SAVES [OIPGRAPH ARGS...]

SIGNAL is INT or TERM. The process sends it to itself right after its AFTER_SAVES-th saved group of maps
(`RunProgress.save_group`) is on disk, as a user's Ctrl-C or `kill` landing then would; the command defers it
to its next check point (`oipgraph.core.interrupts`), e.g. inside auto's escalation after random's maps are
saved. The patch lives in this child process only.
"""

from __future__ import annotations

import os
import signal
import sys

from oipgraph.outputs import run_progress


def main() -> None:
    signum = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}[sys.argv[1]]
    after = int(sys.argv[2])
    save_group = run_progress.RunProgress.save_group
    saves = []

    def save_then_signal(self, arrays):
        save_group(self, arrays)
        saves.append(1)
        if len(saves) == after:
            os.kill(os.getpid(), signum)

    run_progress.RunProgress.save_group = save_then_signal
    signal.signal(signal.SIGINT, signal.default_int_handler)  # As from a terminal, also under a runner in `&`.
    sys.argv = ["oipgraph", *sys.argv[3:]]
    from oipgraph.cli import main as cli_main

    cli_main.run()


if __name__ == "__main__":
    main()
