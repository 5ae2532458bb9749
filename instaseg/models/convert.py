"""Convert torchvision's maskrcnn_resnet50_fpn weights to `mask_rcnn_r50_fpn_torchvision`.

Key mapping (torchvision -> ours; both the current names and the pre-0.13 ones in brackets,
which the published COCO checkpoint still uses):

    backbone.body.<k>                          backbone.body.<k>  (num_batches_tracked dropped)
    backbone.fpn.inner_blocks.{i}.0.<p>        backbone.fpn.lateral_convs.{i}.0.<p>
        [inner_blocks.{i}.<p>]
    backbone.fpn.layer_blocks.{i}.0.<p>        backbone.fpn.output_convs.{i}.0.<p>
        [layer_blocks.{i}.<p>]
    rpn.head.conv.0.0.<p>  [rpn.head.conv.<p>] rpn.head.conv.<p>
    rpn.head.cls_logits.<p>                    rpn.head.objectness.<p>
    rpn.head.bbox_pred.<p>                     rpn.head.box_deltas.<p>
    roi_heads.box_head.fc6/fc7.<p>             roi_heads.box_head.fc6/fc7.<p>
    roi_heads.box_predictor.cls_score.<p>      roi_heads.box_predictor.cls_score.<p>    (*)
    roi_heads.box_predictor.bbox_pred.<p>      roi_heads.box_predictor.box_deltas.<p>   (*)
    roi_heads.mask_head.{i}.0.<p>              roi_heads.mask_head.convs.{i}.0.<p>
        [roi_heads.mask_head.mask_fcn{i+1}.<p>]
    roi_heads.mask_predictor.conv5_mask.<p>    roi_heads.mask_head.deconv.<p>
    roi_heads.mask_predictor.mask_fcn_logits.<p>  roi_heads.mask_head.logits.<p>       (*)
    (torchvision's transform's mean / std)     pixel_mean, pixel_std (x 255)

(*) Class indices. torchvision counts background as class 0 of num_classes + 1 (91 for COCO:
background and category ids 1..90). Ours has labels 0..K-1 and the background logit last
(`models.roi_heads`). So cls_score rows 1..K become rows 0..K-1 and row 0 becomes row K, and
the background's 4 box-regression rows and its mask-logit channel are dropped. A converted
COCO model has K = 90 and predicts label l for COCO category id l + 1.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from instaseg.models.state_dict import preview

MODEL_NAME = "mask_rcnn_r50_fpn_torchvision"
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # GeneralizedRCNNTransform's defaults, 0..1 units
TORCHVISION_STD = (0.229, 0.224, 0.225)


def _background_last(tensor: Tensor) -> Tensor:
    return torch.cat([tensor[1:], tensor[:1]])


def _drop_background_box(tensor: Tensor) -> Tensor:
    return tensor[4:]


def _drop_background(tensor: Tensor) -> Tensor:
    return tensor[1:]


def _same(tensor: Tensor) -> Tensor:
    return tensor


_P = r"(weight|bias)"
# (torchvision pattern, our name template, value transform); templates use the groups
_RULES: list[tuple[re.Pattern[str], str, Callable[[Tensor], Tensor]]] = [
    (re.compile(r"backbone\.body\.(.+)"), "backbone.body.{0}", _same),
    (
        re.compile(rf"backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?{_P}"),
        "backbone.fpn.lateral_convs.{0}.0.{1}",
        _same,
    ),
    (
        re.compile(rf"backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?{_P}"),
        "backbone.fpn.output_convs.{0}.0.{1}",
        _same,
    ),
    (re.compile(rf"rpn\.head\.conv\.(?:0\.0\.)?{_P}"), "rpn.head.conv.{0}", _same),
    (re.compile(rf"rpn\.head\.cls_logits\.{_P}"), "rpn.head.objectness.{0}", _same),
    (re.compile(rf"rpn\.head\.bbox_pred\.{_P}"), "rpn.head.box_deltas.{0}", _same),
    (re.compile(rf"roi_heads\.box_head\.(fc6|fc7)\.{_P}"), "roi_heads.box_head.{0}.{1}", _same),
    (
        re.compile(rf"roi_heads\.box_predictor\.cls_score\.{_P}"),
        "roi_heads.box_predictor.cls_score.{0}",
        _background_last,
    ),
    (
        re.compile(rf"roi_heads\.box_predictor\.bbox_pred\.{_P}"),
        "roi_heads.box_predictor.box_deltas.{0}",
        _drop_background_box,
    ),
    (
        re.compile(rf"roi_heads\.mask_head\.(\d+)\.0\.{_P}"),
        "roi_heads.mask_head.convs.{0}.0.{1}",
        _same,
    ),
    (
        re.compile(rf"roi_heads\.mask_predictor\.conv5_mask\.{_P}"),
        "roi_heads.mask_head.deconv.{0}",
        _same,
    ),
    (
        re.compile(rf"roi_heads\.mask_predictor\.mask_fcn_logits\.{_P}"),
        "roi_heads.mask_head.logits.{0}",
        _drop_background,
    ),
]
_LEGACY_MASK_CONV = re.compile(rf"roi_heads\.mask_head\.mask_fcn(\d+)\.{_P}")


def convert_torchvision_maskrcnn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision maskrcnn_resnet50_fpn state dict (any class count, current or pre-0.13
    key names) -> a state dict for `mask_rcnn_r50_fpn_torchvision(num_classes - 1)`.

    Raises ValueError listing keys that have no counterpart, and when the class counts of the
    classifier, box regression and mask logits disagree.
    """
    converted: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a Tensor, got {type(value).__name__}")
        if key.endswith("num_batches_tracked"):
            continue  # frozen BN has no step counter
        legacy = _LEGACY_MASK_CONV.fullmatch(key)
        if legacy is not None:
            key = f"roi_heads.mask_head.{int(legacy.group(1)) - 1}.0.{legacy.group(2)}"
        for pattern, template, transform in _RULES:
            match = pattern.fullmatch(key)
            if match is not None:
                converted[template.format(*match.groups())] = transform(value).contiguous()
                break
        else:
            unknown.append(key)
    if unknown:
        hint = ""
        if any(key.startswith("module.") for key in unknown):
            hint = "; the keys carry a 'module.' prefix (a DataParallel checkpoint): strip it"
        raise ValueError(f"keys with no Mask R-CNN counterpart: {preview(unknown)}{hint}")
    _check_classes(converted)
    # torchvision normalises 0..1 images with ImageNet statistics; ours takes 0..255 units
    converted["pixel_mean"] = torch.tensor(TORCHVISION_MEAN) * 255
    converted["pixel_std"] = torch.tensor(TORCHVISION_STD) * 255
    return converted


def _check_classes(converted: dict[str, Tensor]) -> None:
    needed = (
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.box_deltas.weight",
        "roi_heads.mask_head.logits.weight",
    )
    missing = [key for key in needed if key not in converted]
    if missing:
        raise ValueError(f"not a Mask R-CNN state dict: no counterpart of {missing}")
    scores, deltas, logits = (converted[key].shape[0] for key in needed)
    if deltas != 4 * (scores - 1) or logits != scores - 1:
        raise ValueError(
            f"inconsistent class counts (background included): cls_score has {scores}, "
            f"bbox_pred {deltas // 4 + 1}, mask_fcn_logits {logits + 1}"
        )


def num_classes_of(converted: Mapping[str, Tensor]) -> int:
    """Our num_classes (no background) of a converted state dict."""
    return int(converted["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1


def convert_checkpoint(src_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Convert a torchvision Mask R-CNN checkpoint file to safetensors, checked by a strict
    load into `mask_rcnn_r50_fpn_torchvision`.

    src_path: torch.save'd state dict (read with weights_only=True), or a training checkpoint
        holding it under "model" or "state_dict".
    out_path: the safetensors file to write (".safetensors" is appended if missing). Its
        metadata - model name, class names, category ids, num_classes, source - goes into the
        safetensors header (key "instaseg", JSON) and into a JSON file beside it (same stem),
        the layout of the checkpoints that training writes. Class names are COCO's for a
        90-class (COCO) checkpoint, else "class_<torchvision label>".
    Returns the path of the safetensors file. Existing outputs are replaced.
    """
    from instaseg.models.zoo import mask_rcnn_r50_fpn_torchvision

    src = Path(src_path)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint not found: {src}")
    state = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping):
        raise TypeError(f"{src} holds a {type(state).__name__}, expected a state dict")
    converted = convert_torchvision_maskrcnn(state)
    num_classes = num_classes_of(converted)
    mask_rcnn_r50_fpn_torchvision(num_classes).load_state_dict(converted, strict=True)
    out = Path(out_path)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_metadata(num_classes, src), indent=2)
    save_file(converted, str(out), metadata={"format": "pt", "instaseg": text})
    out.with_suffix(".json").write_text(text + "\n")
    return out


def _metadata(num_classes: int, src: Path) -> dict:
    if num_classes == len(COCO_NAMES):
        names = list(COCO_NAMES)
    else:
        names = [f"class_{label}" for label in range(1, num_classes + 1)]
    return {
        "model": MODEL_NAME,
        "classes": names,
        "category_ids": list(range(1, num_classes + 1)),  # torchvision's labels
        "num_classes": num_classes,
        "source": str(src),
        "source_format": "torchvision maskrcnn_resnet50_fpn state dict",
    }


# COCO category names by id 1..90, the label space of torchvision's COCO model; the ten ids
# COCO never uses keep a placeholder so that label l stays category id l + 1
_UNUSED_COCO_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
_COCO_USED = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
).split()


def _coco_names() -> tuple[str, ...]:
    used = iter(_COCO_USED)
    names = [
        f"unused_{i}" if i in _UNUSED_COCO_IDS else next(used).replace("_", " ")
        for i in range(1, 91)
    ]
    return tuple(names)


COCO_NAMES = _coco_names()
