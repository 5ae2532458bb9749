"""Mask codecs in one place: polygons <-> bitmask <-> RLE (compressed and uncompressed).

Conventions:
- A bitmask is a numpy bool array [H, W]; pixel (row i, col j) covers [j, j+1) x [i, i+1).
- Polygons are COCO's: a list of parts, each a flat list [x0, y0, x1, y1, ...] in absolute
  pixels. The parts of one object are unioned; a pixel is inside a part when its centre is.
- An RLE is COCO's dict {"size": [H, W], "counts": ...}, column-major. Compressed counts are a
  str (bytes are accepted on input); uncompressed counts are a list of ints starting with a
  run of zeros.

The RLE codec is pycocotools', so what we write decodes bit-identically in every COCO tool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as coco_mask
from scipy import ndimage

Polygons = list[list[float]]


def polygon_parts(polygons: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Validated COCO polygon parts as float64 arrays [2K] (x0, y0, x1, y1, ...).

    Raises ValueError naming the part index when a part is not a list of finite numbers, has
    an odd number of coordinates or fewer than 3 points. Vectorised per part: a COCO json can
    hold millions of coordinates.
    """
    if not isinstance(polygons, (list, tuple)) or len(polygons) == 0:
        raise ValueError(
            "polygon segmentation must be a non-empty list of parts [x0, y0, x1, y1, ...]"
        )
    parts = []
    for k, part in enumerate(polygons):
        if not isinstance(part, (list, tuple)):
            raise ValueError(
                f"polygon part {k} must be a list of numbers, got {type(part).__name__}"
            )
        if len(part) % 2 != 0:
            raise ValueError(f"polygon part {k} has an odd number of coordinates ({len(part)})")
        if len(part) < 6:
            raise ValueError(f"polygon part {k} has {len(part) // 2} points; at least 3 are needed")
        values = np.asarray(part)
        if values.ndim != 1 or values.dtype.kind not in "iuf" or not np.isfinite(values).all():
            raise ValueError(f"polygon part {k} has a coordinate that is not a finite number")
        parts.append(values.astype(np.float64))
    return parts


def validate_polygons(polygons: Sequence[Sequence[float]]) -> None:
    """Raise ValueError naming the part index when a part has < 3 points or odd length."""
    polygon_parts(polygons)


def validate_rle(rle: dict, height: int, width: int) -> None:
    """Raise ValueError when an RLE is malformed or its size is not (height, width)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("RLE segmentation must be a dict with 'size' and 'counts'")
    size = list(rle["size"])
    if size != [height, width]:
        raise ValueError(f"RLE size {size} does not match the image size [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, list):
        if any((not isinstance(c, int)) or c < 0 for c in counts):
            raise ValueError("uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise ValueError(
                f"uncompressed RLE counts sum to {sum(counts)}, expected H*W = {height * width}"
            )
    elif not isinstance(counts, (str, bytes)):
        raise ValueError(
            f"RLE counts must be a str, bytes or a list of ints, got {type(counts).__name__}"
        )


def polygons_to_mask(polygons: Polygons, height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (parts unioned) to a bool mask [height, width]."""
    parts = [part.tolist() for part in polygon_parts(polygons)]
    rles = coco_mask.frPyObjects(parts, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict:
    """Bool mask [H, W] -> compressed RLE with str counts (JSON-ready)."""
    return masks_to_rles(np.asarray(mask)[None])[0]


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Bool masks [N, H, W] -> list of compressed RLEs with str counts."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape [N, H, W], got {masks.shape}")
    if masks.shape[0] == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in encoded:
        rle["counts"] = rle["counts"].decode("ascii")
    return encoded


def to_compressed_rle(rle: dict) -> dict:
    """Any RLE -> compressed RLE as pycocotools wants it (bytes counts)."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        return coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Compressed or uncompressed RLE -> bool mask [H, W]."""
    return coco_mask.decode(to_compressed_rle(rle)).astype(bool)


def mask_to_uncompressed_rle(mask: np.ndarray) -> dict:
    """Bool mask [H, W] -> uncompressed RLE: column-major run lengths starting with zeros."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [h, w], "counts": [int(c) for c in counts]}


def rle_area(rle: dict) -> int:
    """Foreground pixel count of an RLE."""
    return int(coco_mask.area(to_compressed_rle(rle)))


def segmentation_to_mask(segmentation: Polygons | dict, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygons or RLE) -> bool mask [height, width], validated."""
    if isinstance(segmentation, dict):
        validate_rle(segmentation, height, width)
        return rle_to_mask(segmentation)
    return polygons_to_mask(segmentation, height, width)


def decode_segmentation_into(
    segmentation: Polygons | dict, out: np.ndarray
) -> tuple[float, float, float, float]:
    """Decode a COCO segmentation into the zeroed bool [H, W] array `out`, writing only inside
    the object's bounding box, and return its tight xyxy box (zeros when empty).

    For an RLE the box comes from the runs (no scan of the full frame), so a dataset of many
    small objects in large images costs work in proportion to object area, and untouched pages
    of a lazily zeroed `out` are never written.
    """
    h, w = out.shape
    if isinstance(segmentation, dict):
        validate_rle(segmentation, h, w)
        rle = to_compressed_rle(segmentation)
        x, y, bw, bh = (int(v) for v in coco_mask.toBbox(rle))
        if bw == 0:
            return 0.0, 0.0, 0.0, 0.0
        decoded = coco_mask.decode(rle)  # uint8 [H, W], Fortran order
    else:
        decoded = polygons_to_mask(segmentation, h, w)
        box = mask_to_box(decoded)
        if box is None:
            return 0.0, 0.0, 0.0, 0.0
        x, y = int(box[0]), int(box[1])
        bw, bh = int(box[2]) - x, int(box[3]) - y
    out[y : y + bh, x : x + bw] = decoded[y : y + bh, x : x + bw]
    return float(x), float(y), float(x + bw), float(y + bh)


def mask_to_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight xyxy box of a bool mask [H, W] in pixel-edge coordinates; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def mask_to_polygons(mask: np.ndarray) -> Polygons:
    """Bool mask [H, W] -> COCO polygons that rasterise back to exactly the same mask.

    One part per 4-connected component. Contours run along pixel edges (integer vertices), so
    pixel centres are never on a boundary. Holes are joined to their component's outer contour
    by a vertical "keyhole" bridge traversed both ways: COCO's rasteriser fills by crossings
    along columns, and a vertical segment crosses no column, so the bridge changes no pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    components, _ = ndimage.label(mask)  # 4-connectivity, matching the contour walk below
    loops_by_component: dict[int, list[list[tuple[int, int]]]] = {}
    for loop, pixel in _trace_boundary_loops(mask):
        loops_by_component.setdefault(int(components[pixel]), []).append(loop)
    polygons = []
    for component in sorted(loops_by_component):
        loops = loops_by_component[component]
        outer = max(loops, key=_signed_area)  # the outer contour has the only positive area
        polygon = list(outer)
        for hole in loops:
            if hole is not outer:
                polygon = _bridge_hole(polygon, hole)
        polygons.append([float(v) for xy in _drop_repeats(polygon) for v in xy])
    return polygons


def _trace_boundary_loops(mask: np.ndarray) -> list[tuple[list[tuple[int, int]], tuple[int, int]]]:
    """Closed crack-edge loops of a bool mask, each with one (row, col) pixel it bounds.

    Every boundary side of a foreground pixel is a directed edge with the pixel on its right
    (screen coordinates, y down), so outer contours run clockwise on screen (positive shoelace
    area) and holes anticlockwise. Where two foreground pixels touch only at a corner, the walk
    stays on the same pixel's sides, which keeps foreground 4-connected.
    """
    padded = np.pad(mask, 1)
    core = padded[1:-1, 1:-1]
    sides = {
        # side: (neighbour is background, start vertex, end vertex) as (x, y)
        "top": (~padded[:-2, 1:-1] & core, (0, 0), (1, 0)),
        "right": (~padded[1:-1, 2:] & core, (1, 0), (1, 1)),
        "bottom": (~padded[2:, 1:-1] & core, (1, 1), (0, 1)),
        "left": (~padded[1:-1, :-2] & core, (0, 1), (0, 0)),
    }
    outgoing: dict[tuple[int, int], list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    for exposed, start, end in sides.values():
        for r, c in zip(*np.nonzero(exposed), strict=True):
            r, c = int(r), int(c)
            edge_start = (c + start[0], r + start[1])
            outgoing.setdefault(edge_start, []).append(((c + end[0], r + end[1]), (r, c)))
    loops = []
    while outgoing:
        first = next(iter(outgoing))
        vertex, pixel = first, outgoing[first][0][1]
        loop_pixel = pixel
        loop = []
        while True:
            choices = outgoing.get(vertex)
            if not choices:
                break
            index = next((k for k, (_, p) in enumerate(choices) if p == pixel), 0)
            end, pixel = choices.pop(index)
            if not choices:
                del outgoing[vertex]
            loop.append(vertex)
            vertex = end
        loops.append((_drop_collinear(loop), loop_pixel))
    return loops


def _drop_collinear(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep only the corners of an axis-aligned closed loop."""
    n = len(loop)
    kept = []
    for i in range(n):
        (x0, y0), (x1, y1), (x2, y2) = loop[i - 1], loop[i], loop[(i + 1) % n]
        if (x1 - x0) * (y2 - y1) - (y1 - y0) * (x2 - x1) != 0:
            kept.append(loop[i])
    return kept


def _drop_repeats(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Remove zero-length edges (consecutive equal vertices, wrap-around included): COCO's
    rasteriser divides by an edge's length."""
    kept = [p for i, p in enumerate(loop) if p != loop[i - 1]]
    return kept or loop[:1]


def _signed_area(loop: list[tuple[int, int]]) -> float:
    xs = np.array([p[0] for p in loop], dtype=np.float64)
    ys = np.array([p[1] for p in loop], dtype=np.float64)
    return 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys))


def _bridge_hole(
    polygon: list[tuple[int, int]], hole: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Splice `hole` into `polygon` through a vertical bridge from the hole's first vertex to a
    horizontal edge of `polygon` that spans its x (such an edge exists above any hole)."""
    hx, _ = hole[0]
    n = len(polygon)
    for i in range(n):
        (ax, ay), (bx, by) = polygon[i], polygon[(i + 1) % n]
        if ay == by and min(ax, bx) <= hx <= max(ax, bx):
            anchor = (hx, ay)
            return polygon[: i + 1] + [anchor, *hole, hole[0], anchor] + polygon[i + 1 :]
    raise AssertionError("no horizontal edge spans the hole; the contour walk is inconsistent")
