"""The `oipgraph` command: its absl flags and their checks, the run it drives, and the lock on its folder.

Modules:
    main: `run()` (the console script) and `main`: flags -> model and ascent -> strategy -> outputs,
        chunk by chunk with `--resume`.
    compute: `compute_maps`, the chunks through the strategy, each final map saved at once, progress.
    flags: every flag of `oipgraph`, `check_flags`, `check_run_size`, `fit_memory` and `build_ascent`.
    outlock: `OutputLock`, one run at a time per output folder.

Nothing is imported here: importing `main` or `flags` defines the command's absl flags, which must
happen only in the process that runs the command (`oipgraph-train` defines some of the same names).

Its modules import every other package of oipgraph; none imports them.
"""

__all__: list[str] = []
