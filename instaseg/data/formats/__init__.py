"""Dataset format readers (each returns an InstanceDataset) and the COCO writer.

| format     | reader               | source                                                 |
|------------|----------------------|--------------------------------------------------------|
| `coco`     | `read_coco`          | instances json (polygons, RLE, iscrowd)                |
| `yolo`     | `read_yolo`          | Ultralytics data yaml, or folder with images/, labels/ |
| `masks`    | `read_masks_folder`  | `<id>/images/<id>.png` + `<id>/masks/*.png` (DSB2018)  |
| `labelmap` | `read_labelmap`      | folder with images/ and labels/ label-map PNGs         |
| `via`      | `read_via`           | VGG Image Annotator 1.x / 2.x json                     |

Validation policy, the same in every reader:
- DataError (a ValueError) for anything that leaves the data ambiguous — syntax errors (with
  line and column), missing or mistyped fields, duplicate or unknown ids, invalid geometry,
  sizes that disagree. The message starts with the file, then the image / annotation id, line
  or region, then the field. These are raised whatever skip_bad says: skipping them would
  silently train on something other than what the user annotated.
- DataWarning, once per kind of repair and file with the first culprits named, where one fix
  is obvious: a bbox or YOLO coordinate slightly outside the image is clipped, an instance
  whose mask has no pixels is dropped.
- Images without objects are kept as negatives.
- skip_bad only concerns image files that cannot be read (missing or corrupt): with it they are
  left out with a warning (at load time for readers that read image headers, at access time
  otherwise); without it they are an error.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from instaseg.data.dataset import InstanceDataset
from instaseg.data.formats.coco import dataset_to_coco, read_coco, write_coco
from instaseg.data.formats.labelmap import read_labelmap
from instaseg.data.formats.masks_folder import read_masks_folder
from instaseg.data.formats.via import read_via
from instaseg.data.formats.yolo import read_yolo, read_yolo_folders

FORMATS = ("coco", "yolo", "masks", "labelmap", "via")
READERS = {
    "coco": read_coco,
    "yolo": read_yolo,
    "masks": read_masks_folder,
    "labelmap": read_labelmap,
    "via": read_via,
}


def read_dataset(
    fmt: str,
    src: str | Path,
    *,
    skip_bad: bool = False,
    names: list[str] | None = None,
    **kwargs: Any,
) -> InstanceDataset:
    """Read `src` with the reader of format `fmt` (one of FORMATS); `kwargs` go to that reader
    (e.g. image_root for coco/via, split for yolo, classes for labelmap)."""
    if fmt not in READERS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset format {fmt!r}{hint} (known: {', '.join(FORMATS)})")
    return READERS[fmt](src, names=names, skip_bad=skip_bad, **kwargs)


__all__ = [
    "FORMATS",
    "READERS",
    "dataset_to_coco",
    "read_coco",
    "read_dataset",
    "read_labelmap",
    "read_masks_folder",
    "read_via",
    "read_yolo",
    "read_yolo_folders",
    "write_coco",
]
