"""Loading a dataset of images for dataset examples: a Keras-format `.npz` or a folder of images.

The images come back in the model's input shape (H, W, C) but still in their
stored pixel values (uint8 0..255, or float32 as stored): the preprocessing into
the model's input domain (`model.standardize` for the shipped CNN) happens in the
compiled dataset pass (`examples.find_examples`), batch by batch.

Sources:
- `.npz`: the arrays `x_train` and `x_test` (Keras' MNIST layout; image index i
  counts `x_train` first, then `x_test`; either may be missing), else the array
  `images` (`IMAGES_KEY`), else the file's only array. Shape [N, H, W] (grey) or
  [N, H, W, C] with C in 1, 3, 4; any integer or float dtype.
- A folder: its `.png`, `.jpg` and `.jpeg` files (not its subfolders), sorted
  by name, decoded with `tf.io.decode_image`; other files are ignored.

Images of another size are resized (bilinear, antialiased) to (H, W); grey
becomes RGB by repetition, RGB becomes grey by `tf.image.rgb_to_grayscale`, an
alpha channel is dropped. Limits (checked before the arrays are read):
`MAX_IMAGES` images, `MAX_IMAGE_SIDE` pixels per stored image side,
`MAX_BYTES` bytes for the stored array and for the converted images.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np
import tensorflow as tf

from oipgraph.core.errors import OIPGraphError

IMAGES_KEY = "images"
KERAS_KEYS = ("x_train", "x_test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_IMAGES = 1_000_000
MAX_IMAGE_SIDE = 8192
MAX_BYTES = 2 * 1024**3
_RESIZE_CHUNK = 4096  # Images resized at once.


class DatasetError(OIPGraphError):
    """A dataset that is missing, unreadable, empty, too large or of an unusable shape."""


@dataclasses.dataclass
class Dataset:
    """Images in a model's input shape, before preprocessing.

    Attributes:
        images: uint8 (from uint8 sources: values 0..255) or float32 [N, H, W, C].
        source: The path the images came from.
        names: Per image its file name (folders) or `KEY[i]` (npz), N entries.
    """

    images: np.ndarray
    source: str
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(path: str, image_shape: tuple[int, int, int]) -> Dataset:
    """Loads a `.npz` file or a folder of images in the shape (H, W, C) `image_shape`.

    Raises:
        DatasetError: a missing path, an unreadable file or image, no images,
            a shape or dtype that cannot be converted, or a size beyond the limits.
    """
    if os.path.isdir(path):
        return _load_folder(path, image_shape)
    if not os.path.isfile(path):
        raise DatasetError(f"dataset not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"dataset {path} is neither a folder of images nor an .npz archive")
    return _load_npz(path, image_shape)


def _check_count(path: str, count: int) -> None:
    if count == 0:
        raise DatasetError(f"dataset {path} holds no images")
    if count > MAX_IMAGES:
        raise DatasetError(f"dataset {path} holds {count} images; at most {MAX_IMAGES} are allowed")


def _check_bytes(path: str, what: str, count: int, shape: tuple[int, ...], itemsize: int) -> None:
    size = count * int(np.prod(shape, dtype=np.int64)) * itemsize
    if size > MAX_BYTES:
        raise DatasetError(f"dataset {path}: {what} take {size} bytes; at most {MAX_BYTES} are allowed")


def _array_header(archive: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the array `key` of an open `.npz`, read from its header alone."""
    with archive.open(f"{key}.npy") as file:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(file)
    return tuple(shape), dtype


def _npz_keys(path: str, files: list[str]) -> list[str]:
    keys = [key for key in KERAS_KEYS if key in files]
    if keys:
        return keys
    if IMAGES_KEY in files:
        return [IMAGES_KEY]
    if len(files) == 1:
        return files
    found = ", ".join(files) or "none"
    raise DatasetError(f"dataset {path} has no x_train/x_test or {IMAGES_KEY!r} array; found {found}")


def _load_npz(path: str, image_shape: tuple[int, int, int]) -> Dataset:
    try:
        with zipfile.ZipFile(path) as archive:
            files = [name[: -len(".npy")] for name in archive.namelist() if name.endswith(".npy")]
            keys = _npz_keys(path, files)
            headers = {key: _array_header(archive, key) for key in keys}
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"dataset {path} is unreadable: {err}") from err
    for key, (shape, dtype) in headers.items():
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)) or dtype == np.bool_:
            raise DatasetError(f"dataset {path}: {key} has dtype {dtype}; integer or float pixels are needed")
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
            raise DatasetError(f"dataset {path}: {key} has shape {shape}; expected [N, H, W] or [N, H, W, 1|3|4]")
        if max(shape[1:3]) > MAX_IMAGE_SIDE or min(shape[1:3]) < 1:
            raise DatasetError(
                f"dataset {path}: {key} has images of {shape[1]}x{shape[2]} pixels; sides must be 1..{MAX_IMAGE_SIDE}"
            )
        _check_bytes(path, key, shape[0], shape[1:], dtype.itemsize)
    _check_count(path, sum(shape[0] for shape, _ in headers.values()))
    converted_size = 1 if all(dtype == np.uint8 for _, dtype in headers.values()) else 4  # uint8 stays uint8.
    _check_bytes(path, "the converted images", sum(s[0] for s, _ in headers.values()), image_shape, converted_size)
    parts, names = [], []
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in keys:
                array = archive[key]
                parts.append(convert(array if array.ndim == 4 else array[..., None], image_shape, f"{path}: {key}"))
                names += [f"{key}[{index}]" for index in range(len(array))]
    except DatasetError:
        raise
    except Exception as err:
        raise DatasetError(f"dataset {path} is unreadable: {err}") from err
    return Dataset(np.concatenate(parts) if len(parts) > 1 else parts[0], path, names)


def convert(images: np.ndarray, image_shape: tuple[int, int, int], what: str) -> np.ndarray:
    """Images [N, h, w, c] (c in 1, 3, 4) in the shape [N, H, W, C] of `image_shape`.

    uint8 stays uint8 (resized values rounded); any other dtype becomes float32.

    Raises:
        DatasetError: float images with NaN or Inf (named by `what`).
    """
    height, width, channels = image_shape
    keep_uint8 = images.dtype == np.uint8
    if not keep_uint8:
        images = images.astype(np.float32)
        if not np.all(np.isfinite(images)):
            raise DatasetError(f"dataset {what} has NaN or Inf pixels")
    if images.shape[3] == 4:
        images = images[..., :3]
    if images.shape[1:] == (height, width, channels):
        return images
    chunks = []
    for begin in range(0, len(images), _RESIZE_CHUNK):
        chunk = tf.cast(images[begin : begin + _RESIZE_CHUNK], tf.float32)
        if chunk.shape[3] == 1 and channels == 3:
            chunk = tf.tile(chunk, [1, 1, 1, 3])
        elif chunk.shape[3] == 3 and channels == 1:
            chunk = tf.image.rgb_to_grayscale(chunk)
        if chunk.shape[1:3] != (height, width):
            chunk = tf.image.resize(chunk, [height, width], method="bilinear", antialias=True)
        if keep_uint8:
            chunk = tf.cast(tf.clip_by_value(tf.round(chunk), 0, 255), tf.uint8)
        chunks.append(chunk.numpy())
    return np.concatenate(chunks)


def _load_folder(path: str, image_shape: tuple[int, int, int]) -> Dataset:
    names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
    names = [name for name in names if os.path.isfile(os.path.join(path, name))]
    if not names:
        raise DatasetError(f"dataset folder {path} holds no {', '.join(IMAGE_EXTENSIONS)} images")
    _check_count(path, len(names))
    _check_bytes(path, "the converted images", len(names), image_shape, 1)
    images = np.empty([len(names), *image_shape], np.uint8)
    for index, name in enumerate(names):
        file_path = os.path.join(path, name)
        try:
            data = tf.io.read_file(file_path)
            height, width = _stored_size(data.numpy())
            if max(height, width) > MAX_IMAGE_SIDE:
                raise DatasetError(
                    f"dataset image {file_path} is {height}x{width} pixels; sides must be at most {MAX_IMAGE_SIDE}"
                )
            image = tf.io.decode_image(data, expand_animations=False).numpy()
        except DatasetError:
            raise
        except Exception as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DatasetError(f"dataset image {file_path} is unreadable: {first_line}") from None
        if image.shape[2] == 2:  # Grey + alpha.
            image = image[..., :1]
        images[index] = convert(image[None], image_shape, file_path)[0]
    return Dataset(images, path, names)


def _stored_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image from its header, before decoding; (0, 0) if the header does not say."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data.startswith(b"\xff\xd8"):
        height, width, _ = tf.io.extract_jpeg_shape(data).numpy()
        return int(height), int(width)
    return 0, 0  # Not a PNG or JPEG: decode_image names the problem.
