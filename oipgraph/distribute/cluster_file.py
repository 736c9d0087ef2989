"""The `--cluster` file: the `cluster` dict of TF_CONFIG, checked, and its addresses checked before a run.

FILE.json holds `{"chief": ["HOST:PORT"], "worker": ["HOST:PORT", ...], "ps": [...]}`: the `cluster` dict
of the standard TF_CONFIG variable (a whole TF_CONFIG, with the dict under `cluster`, is read too). `chief`
is the `oipgraph` process itself (exactly one address, on this machine: it listens there); `worker` the
`oipgraph-worker` processes that run the ascents (at least one); `ps`, optional, the parameter-server
tasks that `ParameterServerStrategy` insists on (they hold nothing here: without one, the chief serves
one itself on a free port). `preflight` checks every address before anything is written: the chief's
port must be free here, every worker and ps must accept a TCP connection within the timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket

from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError

__all__ = ["ClusterFile", "load_cluster_file", "preflight"]

TASK_TYPES = ("chief", "worker", "ps")


@dataclasses.dataclass
class ClusterFile:
    """The checked tasks of a `--cluster` file, each a `HOST:PORT` text."""

    path: str
    chief: str
    workers: list[str]
    ps: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        """The `cluster` dict (TF_CONFIG's), with `ps` only when the file has it."""
        cluster = {"chief": [self.chief], "worker": list(self.workers)}
        return {**cluster, "ps": list(self.ps)} if self.ps else cluster


def split_address(address: object, where: str) -> tuple[str, int]:
    """(host, port) of a `HOST:PORT` text; raises OIPGraphError naming `where` and the address otherwise."""
    if not isinstance(address, str) or address.count(":") < 1 or any(c.isspace() for c in address):
        raise OIPGraphError(f"{where}: {address!r} is not an address HOST:PORT")
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:2222
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise OIPGraphError(f"{where}: {address!r} is not an address HOST:PORT with a port in 1..65535")
    return host, int(port)


def load_cluster_file(path: str) -> ClusterFile:
    """Reads and checks a `--cluster` file (nothing is contacted).

    Raises:
        OIPGraphError: one line naming the file and what is wrong: missing, too large, not JSON, not a dict of
            task lists, no chief (or more than one), no worker, an unknown task type, a bad or repeated address.
    """
    name = f"--cluster={path}"
    if not os.path.isfile(path):
        raise OIPGraphError(f"{name}: no such file")
    if os.path.getsize(path) > limits.MAX_CLUSTER_FILE_BYTES:
        raise OIPGraphError(f"{name}: larger than {limits.MAX_CLUSTER_FILE_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as file:
            cluster = json.load(file)
    except (ValueError, UnicodeDecodeError) as err:
        raise OIPGraphError(f"{name} is not JSON: {err}") from None
    if isinstance(cluster, dict) and isinstance(cluster.get("cluster"), dict):
        cluster = cluster["cluster"]  # A whole TF_CONFIG.
    if not isinstance(cluster, dict):
        raise OIPGraphError(f'{name} must hold a JSON object like {{"chief": ["HOST:PORT"], "worker": [...]}}')
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise OIPGraphError(f"{name}: unknown task type {unknown[0]!r}; the types are {', '.join(TASK_TYPES)}")
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list):
            raise OIPGraphError(f"{name}: {task_type!r} must be a list of HOST:PORT addresses")
    if len(cluster.get("chief", [])) != 1:
        raise OIPGraphError(f"{name}: needs exactly one 'chief' address (this oipgraph process)")
    if not cluster.get("worker"):
        raise OIPGraphError(f"{name}: needs at least one 'worker' address (an oipgraph-worker)")
    tasks = [
        (task_type, index, address)
        for task_type in TASK_TYPES
        for index, address in enumerate(cluster.get(task_type, []))
    ]
    if len(tasks) > limits.MAX_CLUSTER_TASKS:
        raise OIPGraphError(f"{name}: {len(tasks)} tasks, above the limit of {limits.MAX_CLUSTER_TASKS}")
    seen: dict[tuple[str, int], str] = {}
    for task_type, index, address in tasks:
        host_port = split_address(address, f"{name}: {task_type} {index}")
        if host_port in seen:
            raise OIPGraphError(f"{name}: {address} is given twice ({seen[host_port]} and {task_type} {index})")
        seen[host_port] = f"{task_type} {index}"
    return ClusterFile(path, cluster["chief"][0], list(cluster["worker"]), list(cluster.get("ps", [])))


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` TCP ports on `host` that were free a moment ago (bound together, so all different)."""
    host = "127.0.0.1" if host == "localhost" else host
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def preflight(cluster: ClusterFile, timeout: float) -> None:
    """Checks every address of `cluster` before anything runs or is written.

    The chief's port must be free on this machine (it is bound and released); every worker and ps must
    accept a TCP connection within `timeout` seconds.

    Raises:
        OIPGraphError: one line naming the first address that fails and why.
    """
    name = f"--cluster={cluster.path}"
    _, chief_port = split_address(cluster.chief, name)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # As TensorFlow's server binds it.
        try:
            probe.bind(("", chief_port))
        except OSError as err:
            raise OIPGraphError(
                f"{name}: the chief's address {cluster.chief} (this process) cannot listen here: {err.strerror}"
            ) from None
    for task_type, addresses in (("worker", cluster.workers), ("ps", cluster.ps)):
        for index, address in enumerate(addresses):
            host, port = split_address(address, name)
            try:
                socket.create_connection((host, port), timeout=timeout).close()
            except OSError as err:
                why = err.strerror or type(err).__name__
                raise OIPGraphError(
                    f"{name}: {task_type} {index} at {address} does not answer ({why});"
                    f" start oipgraph-worker there with TF_CONFIG's task {{'type': '{task_type}', 'index': {index}}}"
                ) from None
