"""Pure tensor and array functions: box geometry and mask codecs. No module state, no I/O."""

from instaseg.ops.anchors import AnchorGenerator
from instaseg.ops.box_coder import decode_boxes, encode_boxes
from instaseg.ops.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_ioa,
    box_iou,
    box_xywh_to_xyxy,
    box_xyxy_to_cxcywh,
    box_xyxy_to_xywh,
    clip_boxes,
    generalized_box_iou,
    masks_to_boxes,
)
from instaseg.ops.deform_conv import deform_conv2d
from instaseg.ops.fast_nms import NMS_METHODS, fast_nms, standard_nms
from instaseg.ops.nms import batched_nms, batched_nms_top_k, nms
from instaseg.ops.paste import paste_masks_in_image
from instaseg.ops.poolers import assign_fpn_levels, roi_pool_levels
from instaseg.ops.roi_align import roi_align

__all__ = [
    "NMS_METHODS",
    "AnchorGenerator",
    "assign_fpn_levels",
    "batched_nms",
    "batched_nms_top_k",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_ioa",
    "box_iou",
    "box_xywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_xyxy_to_xywh",
    "clip_boxes",
    "decode_boxes",
    "deform_conv2d",
    "encode_boxes",
    "fast_nms",
    "generalized_box_iou",
    "masks_to_boxes",
    "nms",
    "paste_masks_in_image",
    "roi_align",
    "roi_pool_levels",
    "standard_nms",
]
