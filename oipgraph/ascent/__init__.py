"""The compiled ascent: one step rule, its loop over many (image, target) pairs, and what it returns.

Modules:
    oip_ascent: `OIPAscent`, the `tf.Module` whose `optimize` runs the whole ascent in one `tf.while_loop`.
    loop: `AscentLoop`, the loop's state, stop rules, compaction of stopped pairs and snapshots.
    step: `AscentStep`, the one loss-gradient-update step every loop uses.
    transforms: transformation robustness (jitter, scale) applied to what the model sees.
    domain: where images live (standardized per image, or a value range) and how they are shown.
    results: `AscentResult` and the functions that select, replace and join pairs of results.

Imports `oipgraph.objectives`, `oipgraph.models` and `oipgraph.core`.
"""

from oipgraph.ascent.domain import STANDARDIZED, Domain, ValueRange, infer_domain, parse_domain
from oipgraph.ascent.oip_ascent import (
    DEFAULT_CONV_CRITERION,
    DEFAULT_EPSILON,
    DEFAULT_NUM_SNAPSHOTS,
    DEFAULT_STEPS,
    OIPAscent,
)
from oipgraph.ascent.results import AscentResult
from oipgraph.ascent.step import GRADIENT_EPS, AscentStep, ascent_update, compiled_step, loss_and_gradient
from oipgraph.ascent.transforms import Transforms
from oipgraph.objectives.base import STATUS_COMPLETED, STATUS_CONVERGED, STATUS_NAMES, STATUS_NO_ACTIVATION

__all__ = [
    "DEFAULT_CONV_CRITERION",
    "DEFAULT_EPSILON",
    "DEFAULT_NUM_SNAPSHOTS",
    "DEFAULT_STEPS",
    "GRADIENT_EPS",
    "STANDARDIZED",
    "STATUS_COMPLETED",
    "STATUS_CONVERGED",
    "STATUS_NAMES",
    "STATUS_NO_ACTIVATION",
    "AscentResult",
    "AscentStep",
    "Domain",
    "OIPAscent",
    "Transforms",
    "ValueRange",
    "ascent_update",
    "compiled_step",
    "infer_domain",
    "loss_and_gradient",
    "parse_domain",
]
