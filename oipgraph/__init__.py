"""oipgraph: optimal input patterns (OIPs) for the feature maps of a trained CNN."""

import os
import platform
import sys

# TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with AVX-512 VNNI/BF16 or AMX.
# On the others (AVX2, e.g. AMD EPYC) the OIP ascent runs 1.3 to 2 times as fast with them
# (BENCHMARKS.md). TensorFlow reads the variable once, when it is imported, so it is set only
# while TensorFlow is not loaded yet: the environment then always says what this process runs,
# and child processes run the same kernels. A value set by the user wins.
if "tensorflow" not in sys.modules and platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

COMMANDS = frozenset({"oipgraph", "oipgraph-train", "oipgraph-export", "oipgraph-worker"})


def _user_wants_tensorflow_logs(argv: list[str]) -> bool:
    """Whether the user asked for TensorFlow's logs: their own TF_CPP_MIN_LOG_LEVEL, or --verbosity/-v."""
    return "TF_CPP_MIN_LOG_LEVEL" in os.environ or any(
        arg == "-v" or arg.startswith(("--verbosity", "-v=")) for arg in argv[1:]
    )


def _logical_cpu_devices(argv: list[str]) -> int:
    """The N of `--devices=N` (or `--devices N`) in `argv`; 0 when absent or not a plain number (the flag's own
    check reports a bad value)."""
    for index, arg in enumerate(argv[1:], start=1):
        value = arg.split("=", 1)[1] if arg.startswith("--devices=") else None
        if arg == "--devices" and index + 1 < len(argv):
            value = argv[index + 1]
        if value is not None:
            return int(value) if value.isdigit() else 0
    return 0


def _import_tensorflow_quietly(logical_cpus: int = 0) -> None:
    """Imports TensorFlow and starts its CPU device with file descriptor 2 sent to /dev/null.

    TensorFlow's C++ libraries write ~10 lines when they load and when the first
    op runs (oneDNN, CUDA probes, "failed call to cuInit" on a machine without a
    GPU, CPU features), partly before its logging is set up, so
    TF_CPP_MIN_LOG_LEVEL alone does not silence them. Python exceptions still
    propagate once stderr is back.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        # `--devices=N` on a machine without a GPU: N logical CPU devices, which must exist before the runtime
        # starts (below); `oipgraph.distribute.devices.make_devices` finds them made.
        if 1 < logical_cpus <= 64 and not tf.config.list_physical_devices("GPU"):
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
        tf.constant(0)
        tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# The command-line tools start quietly: one line for a bad flag, not TensorFlow's start-up log.
# Library users (notebooks, scripts) keep TensorFlow's defaults.
_argv = getattr(sys, "argv", None) or [""]
if (
    "tensorflow" not in sys.modules
    and os.path.basename(_argv[0]) in COMMANDS
    and not _user_wants_tensorflow_logs(_argv)
):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    _import_tensorflow_quietly(_logical_cpu_devices(_argv) if os.path.basename(_argv[0]) == "oipgraph" else 0)
