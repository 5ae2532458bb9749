"""Reference box geometry for the tests, written as plainly as possible (Python floats, one
pair at a time), to check the vectorised ops against."""


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes, torchvision's arithmetic (no +1; 0/0 is treated as no overlap)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
