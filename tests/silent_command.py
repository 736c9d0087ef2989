"""`oipgraph` with a worker that goes silent mid-call (a test helper): imported before the command runs
(`helpers.run_forked(..., prelude="silent_command")`), it adds two flags. With `--silent_call=C
--silent_after=K` the run's final ascents go to `silent_executor.SilentWorker(C, K)`: call C ends after K pairs
with `WorkerSilent`. `--call_log=FILE` appends one line per call (number, pairs, steps). Without them the
command is as usual.
"""

from __future__ import annotations

from absl import flags
from silent_executor import SilentWorker

from oipgraph.cli import hardware

FLAGS = flags.FLAGS
flags.DEFINE_integer("silent_call", 0, "Tests: the call (from 1) in which the stand-in worker goes silent.")
flags.DEFINE_integer("silent_after", 0, "Tests: pairs of that call that come back before.")
flags.DEFINE_string("call_log", None, "Tests: a file that gets one line per call (number, pairs, steps).")

_make_executor = hardware.make_executor


def make_executor():
    if FLAGS.silent_call or FLAGS.call_log:
        return SilentWorker(FLAGS.silent_call, FLAGS.silent_after, FLAGS.call_log)
    return _make_executor()


hardware.make_executor = make_executor
