"""An `.npz` whose large arrays arrive a block of rows at a time, in any order, without holding them in memory.

A run's image arrays (final images, start images, snapshots) are most of its bytes: at 224 x 224 about 6 MB a
pair, 3 GB for a deep layer's 512 maps. `StagedNpz` stages each of them in an `.npy` file of its own in a
temporary folder beside the output, its rows written in place as their block comes (positioned writes: the
bytes sit in the page cache, not in the process), and `save` zips the staged files and the small arrays into
the `.npz` exactly as `np.savez_compressed` lays it out (one deflated `KEY.npy` member per array, ZIP64), so
`np.load` reads it as before. The process holds one block at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from typing import BinaryIO

import numpy as np

from oipgraph.outputs.catalog import atomic_write_with

COPY_BUFFER_BYTES = 1 << 20


class StagedNpz:
    """Large arrays of shape [*leading_shape, ...] staged row by row (rows of the flattened leading axes).

    Use as a context manager (the staging folder is removed on exit): `put` each block's rows, then `save`.

    Args:
        directory: Where the staging folder goes (the output's own folder: same file system, same quota).
        leading_shape: The arrays' leading axes, e.g. (maps, inits); their product is the number of rows.
    """

    def __init__(self, directory: str, leading_shape: tuple[int, ...]):
        self.directory, self.leading_shape = directory, tuple(int(size) for size in leading_shape)
        self.rows = int(np.prod(self.leading_shape))
        self.folder: str | None = None
        self._files: dict[str, tuple[BinaryIO, int, int]] = {}  # key -> (file, data offset, bytes per row)
        self._written: dict[str, np.ndarray] = {}

    def __enter__(self) -> StagedNpz:
        self.folder = tempfile.mkdtemp(dir=self.directory, prefix=".tmp-")
        return self

    def __exit__(self, *exc_info) -> None:
        for file, _, _ in self._files.values():
            file.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _open(self, key: str, row_shape: tuple[int, ...], dtype: np.dtype) -> tuple[BinaryIO, int, int]:
        file = open(os.path.join(self.folder, f"{key}.npy"), "w+b")  # noqa: SIM115 - closed in __exit__.
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(file, {**header, "shape": (*self.leading_shape, *row_shape)})
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        file.truncate(file.tell() + row_bytes * self.rows)
        self._written[key] = np.zeros(self.rows, bool)
        return file, file.tell(), row_bytes

    def put(self, key: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Writes `values[i]` as row `rows[i]` of array `key` (every block of a key: the same row shape and dtype).

        Args:
            key: The array's name in the `.npz`.
            rows: int [B], rows of the flattened leading axes, each written once over all blocks.
            values: [B, ...], the rows' values.
        """
        values = np.ascontiguousarray(values)
        if key not in self._files:
            self._files[key] = self._open(key, values.shape[1:], values.dtype)
        file, offset, row_bytes = self._files[key]
        if values.shape[0] != len(rows) or values[0].nbytes != row_bytes:
            raise ValueError(f"{key}: a block of {values.shape} does not fit rows of {row_bytes} bytes")
        written = self._written[key]
        if np.any(written[rows]) or len(np.unique(rows)) != len(rows):
            raise ValueError(f"{key}: rows written twice")
        for row, value in zip(rows, values):
            file.seek(offset + int(row) * row_bytes)
            file.write(value.data)
        written[rows] = True

    def save(self, path: str, arrays: dict[str, np.ndarray]) -> None:
        """Writes `path` atomically: the staged arrays and `arrays` (in memory), as `np.savez_compressed` would.

        Raises:
            ValueError: a staged array has rows that no block wrote (the `.npz` would hold zeros there).
        """
        for key, written in self._written.items():
            if not written.all():
                raise ValueError(f"{key}: {int((~written).sum())} of {self.rows} rows were never written")

        def write(file: BinaryIO) -> None:
            with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
                for key, value in arrays.items():
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
                for key, (staged, _, _) in self._files.items():
                    staged.flush()
                    staged.seek(0)
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                        shutil.copyfileobj(staged, member, COPY_BUFFER_BYTES)

        atomic_write_with(path, write)
