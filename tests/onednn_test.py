"""Tests of the oneDNN default that importing oipgraph sets for TensorFlow."""

import os
import subprocess
import sys

import tensorflow as tf


class OneDnnDefaultTest(tf.test.TestCase):
    def run_import(self, imports: str, **env_overrides) -> str:
        env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
        env.update(env_overrides)
        code = f"import os; {imports}; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    def test_importing_oipgraph_first_turns_onednn_on_unless_the_user_chose(self):
        expected = "1" if os.uname().machine.lower() in ("x86_64", "amd64") else "None"
        self.assertEqual(self.run_import("import oipgraph"), expected)
        self.assertEqual(self.run_import("import oipgraph", TF_ENABLE_ONEDNN_OPTS="0"), "0")

    def test_after_tensorflow_the_environment_keeps_tensorflows_choice(self):
        # TensorFlow has read the variable already; setting it now would only mislead child processes.
        self.assertEqual(self.run_import("import tensorflow, oipgraph"), "None")


if __name__ == "__main__":
    tf.test.main()
