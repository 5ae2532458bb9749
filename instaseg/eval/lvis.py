"""LVIS-style federated evaluation (Gupta et al., CVPR 2019).

A ground truth is LVIS-style when every image carries `neg_category_ids` and
`not_exhaustive_category_ids` and every category a `frequency` ("r", "c" or "f"). Then:

- a detection of a category neither present in its image nor listed in its
  `neg_category_ids` is not evaluated;
- an unmatched detection of a category in `not_exhaustive_category_ids` is not a false positive;
- each image keeps its 300 highest-scoring detections over all categories;
- APr, APc and APf average AP over the rare, common and frequent categories.

Matching and accumulation run in faster-coco-eval's `lvis_style` mode; this module validates
the fields, applies the per-image cap and names the statistics.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

from instaseg.data.errors import DataError, DataWarning

LVIS_MAX_DETS = 300
FREQUENCIES = ("r", "c", "f")


def is_lvis(dataset: dict) -> bool:
    """True when a COCO dict carries the LVIS image and category fields."""
    images, categories = dataset.get("images", []), dataset.get("categories", [])
    return (
        bool(images)
        and all("neg_category_ids" in im and "not_exhaustive_category_ids" in im for im in images)
        and all("frequency" in c for c in categories)
    )


def validate_lvis(dataset: dict, source: str) -> None:
    """Raise DataError naming the first image or category whose LVIS fields are missing or bad."""
    category_ids = {c["id"] for c in dataset["categories"]}
    for category in dataset["categories"]:
        if category.get("frequency") not in FREQUENCIES:
            raise DataError(
                source,
                f"LVIS 'frequency' must be one of {FREQUENCIES}, got {category.get('frequency')!r}",
                item=f"category {category['id']}",
            )
    for image in dataset["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            ids = image.get(key)
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise DataError(
                    source,
                    f"LVIS '{key}' must be a list of category ids",
                    item=f"image {image['id']}",
                )
            unknown = sorted(set(ids) - category_ids)
            if unknown:
                raise DataError(
                    source,
                    f"'{key}' names unknown categories {unknown[:5]}",
                    item=f"image {image['id']}",
                )


def cap_per_image(results: list[dict], max_dets: int) -> list[dict]:
    """Keep each image's `max_dets` highest-scoring detections (stable for equal scores, as
    the LVIS API does), warning when any are dropped."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(result)
    over = {image_id: len(dets) for image_id, dets in by_image.items() if len(dets) > max_dets}
    if not over:
        return results
    dropped = sum(n - max_dets for n in over.values())
    worst = max(over, key=over.get)
    warnings.warn(
        f"{dropped} detections beyond {max_dets} per image are not evaluated (LVIS protocol); "
        f"{len(over)} images have more, e.g. image {worst} with {over[worst]}",
        DataWarning,
        stacklevel=3,
    )
    kept = []
    for dets in by_image.values():
        kept.extend(sorted(dets, key=lambda r: -r["score"])[:max_dets])
    return kept


# The six AP figures COCO and LVIS share: our name -> faster-coco-eval `stats_as_dict` label.
AP_STAT_KEYS = {
    "AP": "AP_all",
    "AP50": "AP_50",
    "AP75": "AP_75",
    "APs": "AP_small",
    "APm": "AP_medium",
    "APl": "AP_large",
}


def lvis_stat_keys(max_dets: int) -> dict[str, str]:
    """Our metric names -> faster-coco-eval `stats_as_dict` labels, in LVIS's reporting order."""
    return {
        **AP_STAT_KEYS,
        "APr": "APr",
        "APc": "APc",
        "APf": "APf",
        f"AR{max_dets}": "AR_all",
        "ARs": "AR_small",
        "ARm": "AR_medium",
        "ARl": "AR_large",
    }
