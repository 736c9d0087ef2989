"""A worker that goes silent mid-call (`WorkerSilent`, a `PairsUnfinished` with the pairs that came back): every
strategy saves the maps whose pairs are final before the run ends with exit code 2, and `--resume` computes the
others to the outputs of an uninterrupted run. The silent worker is a stand-in (tests/silent_executor.py): no
cluster needed; tests/cluster_test.py has the real one."""

import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import load_arrays, run_forked
from silent_executor import SILENCE, SilentWorker

from oipgraph.ascent import OIPAscent
from oipgraph.distribute.cluster import WorkerSilent
from oipgraph.strategies import StrategySettings, create_oips

SIX = ["--maps=0-5", "--steps=60", "--dataset=", "--batch_size=6"]
# name: (flags, (call, pairs back before the silence), maps saved at the silence). The calls of each run:
# coarse_to_fine: 3 stages, then the final ascent; preactivation: the final ascent (the wake-up runs here);
# precursor: the full ascents of 8 starts per map, map by map; auto: random, the precursor stage's full ascents
# (3 starts each for maps 1 and 2), the wake-up's (maps 3 and 5), and before the silence random's fired maps
# 0 and 4 and, after the precursor stage, maps 1 and 2 are saved already.
CASES = {
    "coarse_to_fine": (["--strategy=coarse_to_fine", *SIX], (4, 3), [0, 1, 2]),
    "coarse_to_fine_stage": (["--strategy=coarse_to_fine", *SIX], (2, 3), []),
    "preactivation": (["--strategy=preactivation", *SIX], (1, 3), [0, 1, 2]),
    "precursor": (["--strategy=precursor", "--maps=0-1", "--steps=60", "--dataset=", "--batch_size=2"], (1, 8), [0]),
    "auto_precursor": (["--strategy=auto", *SIX, "--escalation_budget=1000"], (2, 3), [0, 1, 4]),
    "auto_preactivation": (["--strategy=auto", *SIX, "--escalation_budget=1000"], (3, 1), [0, 1, 2, 3, 4]),
}


def saved_maps(out: str) -> list[int]:
    folder = os.path.join(out, ".progress")
    groups = [load_arrays(os.path.join(folder, name)) for name in os.listdir(folder) if name.startswith("maps_")]
    return sorted(int(m) for group in groups for m in np.unique(group["map_index"]))


@pytest.mark.heavy
class SilentWorkerRunTest(tf.test.TestCase):
    def test_every_strategy_saves_its_final_maps_and_resume_equals_an_uninterrupted_run(self):
        root = self.get_temp_dir()
        references = {}  # One uninterrupted run per set of flags.
        for name, (flags, _, _) in CASES.items():
            references.setdefault(tuple(flags), os.path.join(root, f"reference_{name}"))
        cases = [[*flags, f"--out={out}"] for flags, out in references.items()]
        for name, (flags, (call, after), _) in CASES.items():
            cases.append([*flags, f"--out={root}/{name}", f"--silent_call={call}", f"--silent_after={after}"])
        done = run_forked("oipgraph", cases, prelude="silent_command")
        for result in done[: len(references)]:
            self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        for (name, (flags, _, saved)), cut in zip(CASES.items(), done[len(references) :], strict=True):
            with self.subTest(case=name, stage="silent"):
                self.assertEqual(cut.returncode, 2, cut.stderr[-3000:])
                last = cut.stderr.strip().splitlines()[-1]
                total = len(np.unique(load_arrays(f"{references[tuple(flags)]}/oips.npz")["map_index"]))
                self.assertEqual(
                    last,
                    f"oipgraph: error: {SILENCE}; {len(saved)} of {total} maps are saved, rerun with --resume to"
                    " continue",
                )
                self.assertEqual(saved_maps(f"{root}/{name}") if saved else [], saved)
        resumed = run_forked(
            "oipgraph", [[*flags, f"--out={root}/{name}", "--resume"] for name, (flags, _, _) in CASES.items()]
        )
        for (name, (flags, _, _)), result in zip(CASES.items(), resumed, strict=True):
            with self.subTest(case=name, stage="resumed"):
                self.assertEqual(result.returncode, 0, result.stderr[-3000:])
                expected = load_arrays(f"{references[tuple(flags)]}/oips.npz")
                got = load_arrays(f"{root}/{name}/oips.npz")
                self.assertEqual(sorted(got), sorted(expected))
                for key in expected:
                    self.assertAllEqual(expected[key], got[key], msg=key)


class PrecursorFallbackTest(tf.test.TestCase):
    """The precursor strategy's second pass (maps that no start of the first grid fires) cut short: the maps
    final after the first pass are kept, and of the second pass's maps those whose starts all came back."""

    def test_a_silence_in_the_fallback_pass_keeps_the_final_maps(self):
        ascent = OIPAscent.from_file(None, "Conv2D_3")
        settings = StrategySettings(
            steps=30,
            batch_size=4,
            precursor_grid=2,
            precursor_values=(0.2, 0.8),
            precursor_fallbacks=((3, (0.2, 0.8)),),
        )
        maps = [0, 3]  # Map 0 fires from a 2x2 pattern, map 3 from none: it gets the fallback pass (call 2).
        reference = create_oips(ascent, maps, "precursor", settings=settings)
        self.assertEqual(reference.result.status.tolist()[1], 2, "map 3 must need the fallback pass")
        for after, kept in ((4, [0]), (8, [0, 1])):  # Map 3's 8 starts: 4 back, or all.
            with self.subTest(after=after):
                cut = StrategySettings(**{**settings.__dict__, "executor": SilentWorker(2, after)})
                with self.assertRaises(WorkerSilent) as raised:
                    create_oips(ascent, maps, "precursor", settings=cut)
                run = raised.exception.run
                self.assertAllEqual(raised.exception.run_rows, kept)
                expected = reference.select(np.asarray(kept))
                for key, value in expected.arrays().items():
                    self.assertAllEqual(run.arrays()[key], value, msg=key)


if __name__ == "__main__":
    tf.test.main()
