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
