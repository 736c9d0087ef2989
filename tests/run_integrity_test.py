"""A layer-wide run that cannot be fooled: SIGTERM, a second writer, a changed model, damaged chunks,
file modes that follow the umask, and error messages whose advice works when followed.

Every run uses a tiny model (16 maps that always fire, 12x12 images), so the CLI's start-up dominates.
"""

import glob
import json
import os
import shutil
import signal
import stat
import tempfile
import time

import helpers
import keras
import pytest
import tensorflow as tf
from helpers import assert_one_line_error, finish, load_arrays, run_forked, start

from oipgraph.cli.outlock import OutputLock

NUM_MAPS = 16
# 8 chunks of one map, about half a second each: a run can be stopped mid-way.
RUN_MAPS = 8
RUN_ARGS = ["--layer=conv", f"--maps=0-{RUN_MAPS - 1}", "--steps=750", "--conv_criterion=0", "--batch_size=1"]


def tiny_model(seed: int) -> keras.Model:
    """One 3x3 conv with 16 maps and bias 1 on 12x12 images: every map fires for every start."""
    with helpers.keras_seed(seed):
        inputs = keras.Input((12, 12, 1), name="image")
        layer = keras.layers.Conv2D(
            NUM_MAPS, 3, activation="relu", bias_initializer=keras.initializers.Constant(1.0), name="conv"
        )
        return keras.Model(inputs, layer(inputs))


def wait_for(condition, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.heavy
class RunIntegrityTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="run_integrity_test_")
        cls.model_path = os.path.join(cls.root, "tiny.keras")
        tiny_model(0).save(cls.model_path)
        cls.args = [f"--model={cls.model_path}", *RUN_ARGS]
        # The uninterrupted reference run, under umask 027; the tests wait for it only when they need it.
        cls.reference = os.path.join(cls.root, "reference")
        cls.reference_process = start(
            "oipgraph", *cls.args, f"--out={cls.reference}", preexec_fn=lambda: os.umask(0o027)
        )

    @classmethod
    def tearDownClass(cls):
        if cls.reference_process.poll() is None:
            cls.reference_process.kill()
            cls.reference_process.wait()
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def reference_outputs(self) -> str:
        if self.reference_process.returncode is None:
            type(self).reference_stderr = self.reference_process.communicate(timeout=300)[1]
        self.assertEqual(self.reference_process.returncode, 0, self.reference_stderr[-3000:])
        return self.reference

    def test_outputs_follow_the_umask(self):
        out = self.reference_outputs()
        [run_dir] = glob.glob(os.path.join(out, "tensorboard", "*"))
        folders = [out, os.path.join(out, "maps"), os.path.join(out, "tensorboard"), run_dir]
        files = [os.path.join(out, name) for name in ("catalog.json", "oips.npz", "grid.png", "index.html")]
        files += glob.glob(os.path.join(out, "maps", "*.png")) + glob.glob(os.path.join(run_dir, "*"))
        self.assertLen(glob.glob(os.path.join(out, "maps", "*.png")), 3 * RUN_MAPS)  # map, _oip, _steps
        for folder in folders:
            self.assertEqual(stat.S_IMODE(os.stat(folder).st_mode), 0o750, folder)
        for file in files:
            self.assertEqual(stat.S_IMODE(os.stat(file).st_mode), 0o640, file)
        self.assertEqual(
            sorted(os.listdir(out)), ["catalog.json", "grid.png", "index.html", "maps", "oips.npz", "tensorboard"]
        )

    def test_sigterm_second_writer_changed_model_and_damaged_chunk(self):
        out = os.path.join(self.root, "interrupted")
        progress = os.path.join(out, ".progress")
        chunks = lambda: sorted(glob.glob(os.path.join(progress, "maps_*.npz")))  # noqa: E731
        first = start("oipgraph", *self.args, f"--out={out}")

        # A second writer while another process holds --out (here this test, at the same time as the first
        # run starts elsewhere): refused at once, naming the holder, and nothing written.
        busy = os.path.join(self.root, "busy")
        with OutputLock(busy):
            before = sorted(os.listdir(busy))
            # Both after one TensorFlow import (tests/forked_commands.py), one at a time.
            writers = run_forked(
                "oipgraph", [[*self.args, f"--out={busy}", *extra] for extra in ([], ["--resume"])], parallel=1
            )
            for done in writers:
                self.assertEqual(done.returncode, 2, done.stderr[-2000:])
                assert_one_line_error(
                    self, done.stderr, "oipgraph", f"--out={busy} is in use by another oipgraph process"
                )
                self.assertIn(f"(pid {os.getpid()})", done.stderr)
            self.assertEqual(sorted(os.listdir(busy)), before)

        # SIGTERM as Ctrl-C: a message, exit 143, the finished chunks kept, no lock left.
        wait_for(lambda: len(chunks()) >= 1, "a finished chunk")
        first.send_signal(signal.SIGTERM)
        done = finish(first)
        self.assertEqual(done.returncode, 143, done.stderr[-2000:])
        self.assertRegex(done.stderr, rf"oipgraph: terminated with \d+ of {RUN_MAPS} maps saved; rerun with --resume")
        saved = len(chunks())
        self.assertBetween(saved, 1, RUN_MAPS - 1, "the run was not terminated mid-way")
        self.assertFalse(os.path.exists(os.path.join(out, "catalog.json")))
        self.assertFalse(os.path.exists(os.path.join(out, ".lock")))

        # Another model file under the same name: --resume refuses to mix two models' OIPs.
        original = self.model_path + ".original"
        shutil.copyfile(self.model_path, original)
        tiny_model(1).save(self.model_path)
        try:
            done = finish(start("oipgraph", *self.args, f"--out={out}", "--resume"))
        finally:
            os.replace(original, self.model_path)
        self.assertEqual(done.returncode, 2, done.stderr[-2000:])
        assert_one_line_error(self, done.stderr, "oipgraph", "the model file changed since the run started")
        self.assertLen(chunks(), saved)

        # A damaged chunk is computed again, with a warning; the result equals the uninterrupted run's.
        damaged = chunks()[0]
        with open(damaged, "r+b") as file:
            file.truncate(os.path.getsize(damaged) // 2)
        done = finish(start("oipgraph", *self.args, f"--out={out}", "--resume"))
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        warnings = [line for line in done.stderr.splitlines() if line.startswith("oipgraph: warning: ")]
        self.assertLen(warnings, 1, done.stderr[-3000:])
        self.assertIn(f"{damaged} is damaged", warnings[0])
        self.assertIn("computing its maps again", warnings[0])
        reference = self.reference_outputs()
        expected, resumed = (load_arrays(os.path.join(path, "oips.npz")) for path in (reference, out))
        self.assertEqual(sorted(expected), sorted(resumed))
        for key in expected:
            self.assertAllEqual(expected[key], resumed[key], msg=key)
        with open(os.path.join(reference, "catalog.json")) as file:
            expected_maps = json.load(file)["maps"]
        with open(os.path.join(out, "catalog.json")) as file:
            self.assertEqual(json.load(file)["maps"], expected_maps)
        self.assertEqual(
            sorted(os.listdir(out)), ["catalog.json", "grid.png", "index.html", "maps", "oips.npz", "tensorboard"]
        )

    def test_advice_of_every_refusal_works_and_other_runs_summaries_are_kept(self):
        args = [f"--model={self.model_path}", "--layer=conv", "--maps=0-1", "--steps=20", "--strategy=random"]
        out, other = os.path.join(self.root, "advice"), os.path.join(self.root, "other")
        done = finish(start("oipgraph", *args, f"--out={out}"))
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        run_dir = os.path.join(out, "tensorboard", "conv-random-seed0")
        events = sorted(glob.glob(os.path.join(run_dir, "events.*")))
        self.assertLen(events, 1)

        refusals = [
            ([f"--out={out}"], f"--out={out} already holds a finished run; pass --overwrite to replace it"),
            ([f"--out={out}", "--resume"], f"--out={out} holds a finished run; nothing to resume (pass --overwrite"),
            (
                [f"--out={other}", f"--logdir={os.path.join(out, 'tensorboard')}"],
                f"already holds TensorBoard run conv-random-seed0 of the run in --out={os.path.realpath(out)};"
                " choose another --logdir",
            ),
            (
                [f"--out={other}", f"--logdir={os.path.join(out, 'tensorboard')}", "--resume"],
                "choose another --logdir",
            ),
        ]
        # All four after one TensorFlow import (tests/forked_commands.py), one at a time: the first two are made
        # holding --out's lock.
        results = run_forked("oipgraph", [[*args, *extra] for extra, _ in refusals], parallel=1)
        for (extra, message), done in zip(refusals, results):
            with self.subTest(flags=extra):
                self.assertEqual(done.returncode, 2, done.stderr[-2000:])
                assert_one_line_error(self, done.stderr, "oipgraph", message)
        self.assertFalse(os.path.exists(other))
        self.assertEqual(sorted(glob.glob(os.path.join(run_dir, "events.*"))), events)

        # Following the advice: --overwrite replaces the run and its own summaries; another --logdir works.
        # Both after one TensorFlow import, side by side: their --out folders and logdirs differ.
        followed = [
            [f"--out={out}", "--overwrite"],
            [f"--out={other}", f"--logdir={os.path.join(self.root, 'other_logs')}"],
        ]
        for done in run_forked("oipgraph", [[*args, *extra] for extra in followed]):
            self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        replaced = glob.glob(os.path.join(run_dir, "events.*"))
        self.assertLen(replaced, 1)
        self.assertNotEqual(replaced, events)
        self.assertEqual(os.listdir(os.path.join(out, "tensorboard")), ["conv-random-seed0"])
        self.assertLen(glob.glob(os.path.join(self.root, "other_logs", "conv-random-seed0", "events.*")), 1)


if __name__ == "__main__":
    tf.test.main()
