"""The dataset config: one yaml per dataset, paths relative to the yaml's folder (or `root`).

    format: coco                 # coco | yolo | masks | labelmap | via
    root: .                      # optional base folder for the paths below
    names: [cat, dog]            # optional where the format names its classes
    train: {json: annotations/train.json, images: train}
    val: {json: annotations/val.json, images: val}

Keys of a split (`train`, `val`, `test`; at least one) per format, `*` = required:

- coco: json*, images (default: the json's folder). names: optional, checked against the json.
- yolo: images*, labels (default: the last `images` component replaced by `labels`).
  names: required (a list, or a dict {class id: name}). Option: missing_labels.
- masks: root*. names: optional, one name (default nucleus). Option: workers.
- labelmap: images*, labels*, classes (class maps). names: required when classes is given,
  else optional, one name. Option: label_suffix.
- via: json*, images (default: the json's folder). names: optional (one name, or the class
  names in label order with class_attribute). Option: class_attribute.

An Ultralytics data yaml (`train: images/train2017` as a string, `names`, `path`, ...) is
accepted too, for format yolo, and read by `read_yolo`. Unknown keys are errors naming the yaml
and suggesting the closest valid key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instaseg.data.dataset import InstanceDataset
from instaseg.data.errors import DataError
from instaseg.data.formats import FORMATS, read_coco, read_labelmap, read_masks_folder, read_via
from instaseg.data.formats._common import check_keys, load_yaml
from instaseg.data.formats.yolo import (
    ULTRALYTICS_KEYS,
    labels_folder_for,
    read_yolo,
    read_yolo_folders,
)

SPLITS = ("train", "val", "test")
CONFIG_NAMES = ("data.yaml", "dataset.yaml")
SPLIT_KEYS = {  # format: {key: required}
    "coco": {"json": True, "images": False},
    "yolo": {"images": True, "labels": False},
    "masks": {"root": True},
    "labelmap": {"images": True, "labels": True, "classes": False},
    "via": {"json": True, "images": False},
}
OPTIONS = {
    "coco": (),
    "yolo": ("missing_labels",),
    "masks": ("workers",),
    "labelmap": ("label_suffix",),
    "via": ("class_attribute",),
}


@dataclass
class DataConfig:
    """A parsed dataset yaml. splits[split][key] are absolute paths."""

    path: Path
    format: str
    names: list[str] | dict[int, str] | None = None
    splits: dict[str, dict[str, Path]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    ultralytics: bool = False  # the yaml is an Ultralytics data yaml, read by read_yolo

    def dataset(self, split: str, **kwargs: Any) -> InstanceDataset:
        """The InstanceDataset of `split`; kwargs (e.g. skip_bad) go to the format's reader."""
        if split not in self.splits:
            raise DataError(self.path, f"no split {split!r}; the config has {sorted(self.splits)}")
        paths, options = self.splits[split], {**self.options, **kwargs}
        if self.ultralytics:
            return read_yolo(self.path, split, **options)
        if self.format == "coco":
            return read_coco(paths["json"], paths.get("images"), names=self.names, **options)
        if self.format == "yolo":
            labels = paths.get("labels") or labels_folder_for(paths["images"], self.path)
            return read_yolo_folders(
                paths["images"], labels, self.names, source=self.path, **options
            )
        if self.format == "masks":
            return read_masks_folder(paths["root"], names=self.names, **options)
        if self.format == "labelmap":
            return read_labelmap(
                self.path.parent,
                images=paths["images"],
                labels=paths["labels"],
                classes=paths.get("classes"),
                names=self.names,
                **options,
            )
        return read_via(paths["json"], paths.get("images"), names=self.names, **options)


def load_data_config(path: str | Path) -> DataConfig:
    """Parse and check a dataset yaml (see the module docstring); nothing is read yet."""
    path = Path(path)
    config = load_yaml(path)
    if not isinstance(config, dict):
        raise DataError(path, f"must be a mapping of keys, got {type(config).__name__}")
    if _is_ultralytics(config):
        check_keys(path, config, ULTRALYTICS_KEYS, "an Ultralytics data yaml")
        base = path.parent.absolute() / str(config.get("path", "."))
        splits = {s: {"images": base / str(config[s])} for s in SPLITS if s in config}
        return DataConfig(path, "yolo", config.get("names"), splits, ultralytics=True)
    fmt = _format(config, path)
    check_keys(path, config, ("format", "root", "names", *SPLITS, *OPTIONS[fmt]), "the config")
    base = path.parent.absolute() / str(config.get("root", "."))
    splits = {s: _split(config[s], fmt, base, path, s) for s in SPLITS if s in config}
    if not splits:
        raise DataError(path, f"no split: give at least one of {', '.join(SPLITS)}")
    names = config.get("names")
    allowed = (list, dict) if fmt == "yolo" else list
    if names is not None and not isinstance(names, allowed):
        expected = "a list or a dict id: name" if fmt == "yolo" else "a list"
        raise DataError(path, f"names must be {expected}, got {type(names).__name__}")
    if names is None and _needs_names(fmt, splits):
        what = "YOLO labels hold class ids" if fmt == "yolo" else "class maps hold numbers"
        raise DataError(path, f"missing 'names': {what}, so the config must name the classes")
    options = {key: config[key] for key in OPTIONS[fmt] if key in config}
    return DataConfig(path, fmt, names, splits, options)


def _is_ultralytics(config: dict) -> bool:
    return config.get("format", "yolo") == "yolo" and any(
        isinstance(config.get(s), (str, list)) for s in SPLITS
    )


def _format(config: dict, path: Path) -> str:
    if "format" not in config:
        raise DataError(path, f"missing 'format' (one of {', '.join(FORMATS)})")
    fmt = config["format"]
    if fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(path, f"unknown format {fmt!r}{hint} (known: {', '.join(FORMATS)})")
    return fmt


def _split(value: Any, fmt: str, base: Path, path: Path, split: str) -> dict[str, Path]:
    """{key: path} of one split, every path relative to `base`."""
    keys = SPLIT_KEYS[fmt]
    if not isinstance(value, dict):
        example = ", ".join(f"{k}: ..." for k in keys)
        raise DataError(
            path, f"split {split!r} must be a mapping like {{{example}}}, got {value!r}"
        )
    check_keys(path, value, tuple(keys), f"split {split!r} (format {fmt})")
    missing = [k for k, required in keys.items() if required and k not in value]
    if missing:
        raise DataError(path, f"split {split!r} is missing {missing} (format {fmt})")
    for key, item in value.items():
        if not isinstance(item, str) or not item:
            raise DataError(path, f"{split}.{key} must be a path (a string), got {item!r}")
    return {key: base / item for key, item in value.items()}


def _needs_names(fmt: str, splits: dict[str, dict[str, Path]]) -> bool:
    return fmt == "yolo" or (fmt == "labelmap" and any("classes" in s for s in splits.values()))


def find_config(spec: str | Path) -> Path | None:
    """The dataset yaml a DATA argument names: the yaml itself, or the one data.yaml /
    dataset.yaml in a folder; None when `spec` is not a yaml (e.g. a COCO json)."""
    spec = Path(spec)
    if spec.is_dir():
        found = [spec / name for name in CONFIG_NAMES if (spec / name).is_file()]
        if len(found) != 1:
            state = "none" if not found else "both"
            raise DataError(
                spec, f"expected one of {' or '.join(CONFIG_NAMES)} in this folder, found {state}"
            )
        return found[0]
    return spec if spec.suffix.lower() in (".yaml", ".yml") else None


def resolve_dataset(spec: str | Path, split: str = "train", **kwargs: Any) -> InstanceDataset:
    """The dataset a command-line DATA argument names: a dataset yaml (ours or Ultralytics'),
    a folder holding exactly one of data.yaml / dataset.yaml, or a COCO json (whose single
    split ignores `split`). kwargs (e.g. skip_bad) go to the reader."""
    spec = Path(spec)
    config = find_config(spec)
    if config is not None:
        return load_data_config(config).dataset(split, **kwargs)
    if spec.suffix.lower() == ".json":
        return read_coco(spec, **kwargs)
    if not spec.exists():
        raise DataError(spec, "not found")
    raise DataError(spec, "expected a dataset yaml, a folder with data.yaml, or a COCO json")
