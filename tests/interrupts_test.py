"""Tests of oipgraph.core.interrupts: Ctrl-C and SIGTERM raised between TensorFlow calls, never inside one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from unittest import mock

import numpy as np
import tensorflow as tf

from oipgraph import starts
from oipgraph.ascent import OIPAscent
from oipgraph.core import interrupts
from oipgraph.strategies.precursor import PrecursorScan


class InterruptsTestCase(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # Python's own SIGINT handling, whatever the runner left (a runner started with `cmd &` ignores SIGINT).
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        self.addCleanup(interrupts._pending.clear)


class DeferredTest(InterruptsTestCase):
    def test_a_signal_waits_for_check(self):
        with interrupts.deferred():
            self.assertIs(signal.getsignal(signal.SIGINT), interrupts._record)
            signal.raise_signal(signal.SIGINT)
            with self.assertRaises(KeyboardInterrupt):
                interrupts.check()
            interrupts.check()  # Raised once.
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_the_end_of_the_block_raises_what_is_pending(self):
        with self.assertRaises(KeyboardInterrupt):
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_a_second_signal_raises_at_once(self):
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            with self.assertRaises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
            interrupts.check()  # Nothing left pending.

    def test_sigterm_only_when_asked_and_raised_as_terminated(self):
        previous = signal.getsignal(signal.SIGTERM)
        with interrupts.deferred():
            self.assertIs(signal.getsignal(signal.SIGTERM), previous)
        with interrupts.deferred(terminate=True):
            self.assertIs(signal.getsignal(signal.SIGTERM), interrupts._record)
            signal.raise_signal(signal.SIGTERM)
            with self.assertRaises(interrupts.Terminated):
                interrupts.check()
        self.assertIs(signal.getsignal(signal.SIGTERM), previous)

    def test_handlers_it_does_not_own_stay_in_charge(self):
        received = []
        own = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        try:
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
                interrupts.check()
        finally:
            signal.signal(signal.SIGINT, own)
        self.assertEqual(received, [signal.SIGINT])
        ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with interrupts.deferred():
                self.assertEqual(signal.getsignal(signal.SIGINT), signal.SIG_IGN)
        finally:
            signal.signal(signal.SIGINT, ignored)

    def test_nested_blocks_leave_the_signal_to_the_outermost(self):
        with interrupts.deferred():
            with self.assertRaises(KeyboardInterrupt):
                with interrupts.deferred():
                    signal.raise_signal(signal.SIGINT)
            self.assertIs(signal.getsignal(signal.SIGINT), interrupts._record)
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_a_failed_block_drops_what_is_pending(self):
        with self.assertRaises(ValueError):
            with interrupts.deferred():
                signal.raise_signal(signal.SIGINT)
                raise ValueError("failed")
        interrupts.check()
        with interrupts.deferred():
            pass

    def test_outside_the_main_thread_it_takes_nothing(self):
        seen = []

        def worker():
            with interrupts.deferred(terminate=True):
                seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

        previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        self.assertEqual(seen, [previous])

    def test_no_interrupt_is_lost_or_raised_inside_eager_tensorflow(self):
        # A SIGINT at a random moment of eager TensorFlow work. Without `deferred`, about 3 in 100 of them are
        # raised inside a `__del__` and lost ("Exception ignored"), and some crash the process in EagerTensor.
        seeds = starts.start_seeds(0, np.arange(2, dtype=np.int64))
        starts.multiscale(seeds, (28, 28, 1))
        draw = random.Random(0)
        trials = 200
        for trial in range(trials):
            timer = threading.Timer(draw.uniform(0, 0.004), os.kill, (os.getpid(), signal.SIGINT))
            raised_by_check = False
            try:
                with interrupts.deferred():
                    timer.start()
                    for _ in range(3):
                        starts.multiscale(seeds, (28, 28, 1))
                    timer.join()
                    try:
                        interrupts.check()
                    except KeyboardInterrupt:
                        raised_by_check = True
            except KeyboardInterrupt:
                self.fail(f"trial {trial}: raised inside TensorFlow's code")
            finally:
                timer.join()
            self.assertTrue(raised_by_check, f"trial {trial}: the interrupt was lost")


class CheckpointsTest(InterruptsTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ascent = OIPAscent.from_file(None, "Conv2D_3")

    def test_the_ascent_stops_after_the_segment_that_was_interrupted(self):
        calls, returned = [], []

        def progress(done, steps):
            calls.append(done)
            signal.raise_signal(signal.SIGINT)
            returned.append(done)  # Not raised inside the callback: it runs within the segment.

        images = starts.multiscale(starts.start_seeds(0, np.arange(2)), self.ascent.image_shape)
        with self.assertRaises(KeyboardInterrupt):
            self.ascent(images, [0, 1], steps=400, conv_criterion=0.0, progress=progress)
        self.assertLen(calls, 1)
        self.assertLess(calls[0], 400)
        self.assertEqual(returned, calls)
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)

    def test_the_precursor_scan_stops_after_the_chunk_that_was_interrupted(self):
        scan = PrecursorScan(self.ascent, grid=3, values=(0.1, 0.9), chunk_size=128)
        score_chunk, scored = scan._score_chunk, []

        def interrupted_chunk(*args):
            signal.raise_signal(signal.SIGINT)
            scores = score_chunk(*args)
            scored.append(len(scores))
            return scores

        with mock.patch.object(scan, "_score_chunk", side_effect=interrupted_chunk) as chunks:
            with self.assertRaises(KeyboardInterrupt):
                scan.run(map_index=0, scan_steps=2, top_n=2)
        self.assertEqual(chunks.call_count, 1)
        self.assertEqual(scored, [128])
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)


# `cli.main` with `run_layers` replaced, in a child process: the two commands define the same absl flags
# (--model), so `oipgraph.cli.main` cannot be imported beside `oipgraph.export` in the test's process.
COMMAND_MESSAGES = """
import json, signal, sys
from unittest import mock
import oipgraph
from oipgraph.cli import main as cli

# Python's own handling, whatever this process inherited (a runner started with `cmd &` ignores SIGINT).
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
results = []
for signum, written in json.loads(sys.argv[1]):
    finished = []

    def run_layers(run, signum=signum, written=written):
        signal.raise_signal(signum)  # Recorded, and raised when the run's block ends.
        if written:
            run["written"] = True
        finished.append(True)

    with mock.patch.object(cli, "run_layers", side_effect=run_layers):
        try:
            cli.main(["oipgraph"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    handlers = [signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL]
    results.append({"code": code, "finished": finished, "handlers_restored": handlers})
print(json.dumps(results))
"""


class CommandMessagesTest(tf.test.TestCase):
    def test_the_command_says_where_it_stopped(self):
        cases = (
            (signal.SIGINT, False, 130, "oipgraph: interrupted before anything was written"),
            (signal.SIGTERM, False, 143, "oipgraph: terminated before anything was written"),
            (signal.SIGINT, True, 130, "oipgraph: interrupted after the run was complete: all of its outputs"),
        )
        argument = json.dumps([[int(signum), written] for signum, written, _, _ in cases])
        done = subprocess.run(
            [sys.executable, "-c", COMMAND_MESSAGES, argument], capture_output=True, text=True, timeout=300
        )
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        results = json.loads(done.stdout.strip().splitlines()[-1])
        messages = [line for line in done.stderr.splitlines() if line.startswith("oipgraph: ")]
        self.assertLen(messages, len(cases), done.stderr[-3000:])
        for (signum, written, code, message), result, line in zip(cases, results, messages, strict=True):
            with self.subTest(signal=signal.Signals(signum).name, written=written):
                self.assertEqual(result, {"code": code, "finished": [True], "handlers_restored": [True, True]})
                self.assertStartsWith(line, message)


if __name__ == "__main__":
    tf.test.main()
