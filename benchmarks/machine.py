"""What the benchmarks report about the machine they ran on (imported by the benchmark scripts).

The scripts run as `python benchmarks/NAME.py`, so this folder is on `sys.path`.
"""

from __future__ import annotations

import os
import platform

import tensorflow as tf


def cpu_model() -> tuple[str, str]:
    """(CPU model name, widest vector extension: AVX-512, AVX2 or 'no AVX2')."""
    cpu, flags_line = platform.processor() or platform.machine(), ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            fields = dict(line.split(":", 1) for line in cpuinfo if ":" in line)
        cpu = fields.get("model name\t", cpu).strip()
        flags_line = fields.get("flags\t\t", "")
    vector = "AVX-512" if "avx512f" in flags_line.split() else "AVX2" if "avx2" in flags_line.split() else "no AVX2"
    return cpu, vector


def onednn_enabled() -> str:
    """'on', 'off' or 'unknown': whether TensorFlow runs its oneDNN kernels in this process."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # Private, but the only way to ask.

        return "on" if _pywrap_util_port.IsMklEnabled() else "off"
    except (ImportError, AttributeError):
        return "unknown"


def machine_description() -> str:
    """CPU model, vector extensions, cores, load, TensorFlow and whether it runs oneDNN kernels."""
    cpu, vector = cpu_model()
    return (
        f"{cpu} ({vector}), cpus={len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}, "
        f"TensorFlow {tf.__version__}, oneDNN {onednn_enabled()} "
        f"(TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')})"
    )
