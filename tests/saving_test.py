"""Every final map is saved at once: Ctrl-C and SIGTERM inside auto's escalation keep them, and --resume
finishes to the uninterrupted run's outputs bit for bit; piped progress has no control characters.

The signals land at deterministic points (tests/interrupted_command.py: right after the N-th saved group).
"""

import glob
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from helpers import finish, load_arrays, run_forked, start

INTERRUPTED_COMMAND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interrupted_command.py")
# Six maps of the shipped CNN, of which a 60-step random ascent leaves some dark: auto escalates them
# (precursor, then the wake-up; a budget that holds the whole default plan).
ARGS = ["--maps=0-5", "--steps=60", "--dataset=", "--escalation_budget=1000"]
CONTROL_CHARACTERS = ("\x1b", "\b", "\r")


@pytest.mark.heavy
class SavingTest(tf.test.TestCase):
    def test_interrupts_inside_the_escalation_keep_finished_maps_and_resume_to_the_same_outputs(self):
        root = self.get_temp_dir()
        reference = os.path.join(root, "reference")
        # After the 1st group (random's maps): stopped in the precursor screen. After the 2nd (the precursor's):
        # stopped in the wake-up.
        cases = (("INT", 1, 130, "interrupted"), ("TERM", 2, 143, "terminated"))
        outs = [os.path.join(root, f"{signal_name}{after}") for signal_name, after, _, _ in cases]
        # The uninterrupted run and the two interrupted ones at the same time: each is a process of its own, and
        # the signals land at deterministic points (after a number of saved groups), not at times.
        reference_process = start("oipgraph", *ARGS, f"--out={reference}")
        self.addCleanup(reference_process.kill)  # A no-op once it has ended.
        stopping = []
        for (signal_name, after, _, _), out in zip(cases, outs):
            command = [sys.executable, INTERRUPTED_COMMAND, signal_name, str(after), *ARGS, f"--out={out}"]
            stopping.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            self.addCleanup(stopping[-1].kill)
        stopped_runs = [finish(process) for process in stopping]

        done = finish(reference_process)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        for stream in (done.stdout, done.stderr):
            for character in CONTROL_CHARACTERS:
                self.assertNotIn(character, stream)
        self.assertRegex(done.stdout, r"oipgraph: 6/6 maps, \d+:\d\d elapsed")
        self.assertIn(
            "escalation planned within 1000 x the random stage's pairs x steps: precursor (3x3 grid", done.stdout
        )
        expected = load_arrays(os.path.join(reference, "oips.npz"))
        strategies = set(expected["strategy"].reshape(-1).tolist())
        self.assertEqual(strategies, {"random", "precursor", "preactivation"}, "the run must escalate")
        with open(os.path.join(reference, "catalog.json")) as file:
            expected_maps = json.load(file)["maps"]

        for (signal_name, after, code, word), out, stopped in zip(cases, outs, stopped_runs):
            with self.subTest(signal=signal_name, after=after, stage="stopped"):
                self.assertEqual(stopped.returncode, code, stopped.stderr[-3000:])
                groups = glob.glob(os.path.join(out, ".progress", "maps_*.npz"))
                self.assertLen(groups, after)
                saved = sum(len(set(load_arrays(group)["map_index"].tolist())) for group in groups)
                self.assertBetween(saved, 1, 5)
                self.assertIn(f"oipgraph: {word} with {saved} of 6 maps saved; rerun with --resume", stopped.stderr)
                self.assertFalse(os.path.exists(os.path.join(out, "catalog.json")))

        # Both resumes after one TensorFlow import (tests/forked_commands.py), each the whole command in its own
        # process; their --out folders differ.
        resumed_runs = run_forked("oipgraph", [[*ARGS, f"--out={out}", "--resume"] for out in outs])
        for (signal_name, after, _, _), out, resumed in zip(cases, outs, resumed_runs):
            with self.subTest(signal=signal_name, after=after, stage="resumed"):
                self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
                arrays = load_arrays(os.path.join(out, "oips.npz"))
                self.assertEqual(sorted(arrays), sorted(expected))
                for key in expected:
                    self.assertAllEqual(expected[key], arrays[key], msg=key)
                with open(os.path.join(out, "catalog.json")) as file:
                    self.assertEqual(json.load(file)["maps"], expected_maps)
                self.assertFalse(os.path.exists(os.path.join(out, ".progress")))
