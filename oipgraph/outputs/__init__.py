"""What a run leaves behind: files, the catalog, TensorBoard summaries and dataset examples.

Modules:
    writer: `write_outputs`, a run's arrays turned into `grid.png`, `maps/`, `oips.npz`, TensorBoard and
        `catalog.json`.
    catalog: file names and atomic writes.
    run_progress: `RunProgress`, the saved maps and plans `--resume` continues from (`.progress/`).
    summaries: pictures as the domain shows them (grids, labels, PNG bytes) and TensorBoard summaries.
    examples, datasets: each map's top dataset images and the ratio of the OIP to the best of them;
        the images read from a Keras `.npz` or an image folder.
    uniqueness: how different a map's OIPs are from each other, up to translation.

Imports `oipgraph.ascent` (results, domains), `oipgraph.models`, `oipgraph.objectives` and `oipgraph.core`.
"""

from oipgraph.outputs.writer import write_outputs

__all__ = ["write_outputs"]
