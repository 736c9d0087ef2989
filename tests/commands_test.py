"""The three commands as a newcomer meets them: a quiet start, one line for a bad flag, a --help that helps."""

import os
import subprocess

import helpers
import pytest
import tensorflow as tf

# Each command, one of its own flags (with its default as --help shows it) and a bad value for it.
COMMANDS = {
    "oipgraph": ("--layer", "(default: 'Conv2D_3')", ["--steps=-1"], "--steps must be > 0, got -1"),
    "oipgraph-train": ("--epochs", "(default: '12')", ["--epochs=0"], "--epochs must be > 0, got 0"),
    "oipgraph-export": ("--export_dir", "TF Serving base path", ["--version=0"], "flag --version=0"),
}


def start(command: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return helpers.start(command, *args, env={**environment, **(env or {})})


@pytest.mark.heavy
class CommandLineTest(tf.test.TestCase):
    def test_a_bad_flag_prints_exactly_one_line(self):
        processes = {name: start(name, *bad) for name, (_, _, bad, _) in COMMANDS.items()}
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=300)
            with self.subTest(command=name):
                self.assertEqual(process.returncode, 2)
                lines = stderr.splitlines()
                self.assertLen(lines, 1, stderr)  # Not one line of TensorFlow's start-up log.
                self.assertStartsWith(lines[0], f"{name}: error: ")
                self.assertIn(COMMANDS[name][3], lines[0])
                self.assertEqual(stdout, "")

    def test_help_lists_the_tools_own_flags_with_defaults(self):
        processes = {name: (start(name, "--help"), start(name, "--helpfull")) for name in COMMANDS}
        for name, (short, full) in processes.items():
            short_out, short_err = short.communicate(timeout=300)
            full_out, _ = full.communicate(timeout=300)
            flag, default, _, _ = COMMANDS[name]
            with self.subTest(command=name):
                self.assertEqual(short.returncode, 1, short_err)  # absl's help flags exit with 1
                self.assertIn(f"  {flag}:", short_out)
                self.assertIn(default, short_out)
                self.assertNotIn("logtostderr", short_out)  # absl's own flags stay in --helpfull
                self.assertLess(len(short_out.splitlines()), len(full_out.splitlines()))
                self.assertIn("logtostderr", full_out)
                self.assertEqual(short_err, "")

    def test_the_users_own_log_level_is_kept(self):
        # A user who sets TF_CPP_MIN_LOG_LEVEL gets TensorFlow's logging as TensorFlow does it.
        process = start("oipgraph", "--steps=-1", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
        _, stderr = process.communicate(timeout=300)
        self.assertEqual(process.returncode, 2)
        self.assertGreater(len(stderr.splitlines()), 1, stderr)


if __name__ == "__main__":
    tf.test.main()
