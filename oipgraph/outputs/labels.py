"""Names for a layer's maps or units (`--labels=FILE`): class names instead of unit 281, or names a user gave.

A labels file holds one name per map or unit of the layer, in index order, in one of three forms:

- plain text, one name per line (UTF-8; an empty line is a map without a name);
- a JSON list of names, `["tench", "goldfish", ...]`;
- a JSON object from index to name, or Keras' ImageNet class index `{"0": ["n01440764", "tench"], ...}`
  (`keras.applications.imagenet_utils`), whose name is the list's last string; the keys must be 0..N-1.

Bounds (`oipgraph.core.limits`): `MAX_LABELS_FILE_BYTES` per file, `MAX_LABEL_CHARS` per name; the count must
equal the layer's maps or units (`check_count`).
"""

from __future__ import annotations

import json
import os

from oipgraph.core import limits
from oipgraph.core.errors import OIPGraphError


def load_labels(path: str) -> list[str]:
    """The names in labels file `path` (module docstring), index order, each stripped of surrounding spaces.

    Raises:
        OIPGraphError: missing or unreadable file, above the bounds, not UTF-8, malformed JSON, a JSON object
            whose keys are not 0..N-1, a name that is no string or has a line break, or no names at all.
    """
    flag = f"--labels={path}"
    if not os.path.isfile(path):
        raise OIPGraphError(f"{flag}: labels file not found")
    size = os.path.getsize(path)
    if size > limits.MAX_LABELS_FILE_BYTES:
        raise OIPGraphError(f"{flag}: the file has {size} bytes, above the limit of {limits.MAX_LABELS_FILE_BYTES}")
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8-sig")
    except OSError as err:
        raise OIPGraphError(f"{flag}: cannot read the file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise OIPGraphError(f"{flag}: not UTF-8 text (byte {err.start})") from None
    names = parse_json(text, flag) if text.lstrip()[:1] in ("[", "{") else text.splitlines()
    if not names:
        raise OIPGraphError(f"{flag}: the file holds no names")
    for index, name in enumerate(names):
        if not isinstance(name, str) or "\n" in name or "\r" in name:
            raise OIPGraphError(f"{flag}: name {index} is not one line of text: {str(name)[:60]!r}")
        if len(name.strip()) > limits.MAX_LABEL_CHARS:
            raise OIPGraphError(
                f"{flag}: name {index} has {len(name.strip())} characters, above the limit of {limits.MAX_LABEL_CHARS}"
            )
    return [name.strip() for name in names]


def parse_json(text: str, flag: str) -> list:
    """The names of a JSON list, or of an object {"0": name or [..., name], ...} with keys 0..N-1."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise OIPGraphError(f"{flag}: malformed JSON ({err})") from None
    if isinstance(value, list):
        return value
    keys = sorted(value, key=lambda key: (len(key), key))
    if keys != [str(index) for index in range(len(keys))]:
        raise OIPGraphError(f"{flag}: the JSON object's keys must be the indices 0..{len(keys) - 1}, got {keys[:5]}...")
    names = []
    for key in keys:
        entry = value[key]
        if isinstance(entry, list) and entry:
            entry = entry[-1]  # ImageNet's class index: [WordNet id, name].
        names.append(entry)
    return names


def check_count(labels: list[str], count: int, layer: str, kind: str) -> None:
    """Fails unless there is one name for each of the layer's `count` maps or units (`kind`: "map" or "unit")."""
    if len(labels) != count:
        raise OIPGraphError(
            f"--labels has {len(labels)} names, but layer {layer} has {count} {kind}s: give one name per {kind}"
        )
