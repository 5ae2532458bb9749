"""The heads of YOLACT (Bolya et al. 2019) and YOLACT++ (Bolya et al. 2020), and the geometry
of prototype masks.

- `PredictionHead`: shared by every pyramid level; per anchor, class logits (background
  LAST, as in `models.roi_heads`), box deltas and k mask coefficients in (-1, 1).
- `Protonet`: P3 -> k non-negative prototype masks at stride 4 (1/4 of the input).
- `MaskIoUHead`: YOLACT++'s fast mask re-scoring network, a cropped mask -> its IoU with the
  ground truth, per class.
- `semantic_head` / `semantic_loss`: the auxiliary semantic segmentation branch on P3
  (training only).
- `box_crop_weights`: how much of each prototype cell a box covers, the "crop" of both papers;
  `prototype_targets`: ground-truth masks at prototype resolution; `paste_prototype_masks`:
  predicted masks into the original frame.

Prototype frame. Prototype cell (r, c) covers model-frame pixels [s c, s (c + 1)) x
[s r, s (r + 1)) of the padded image, s the prototype stride (4), so its centre is at
(s (c + 0.5), s (r + 0.5)), the convention of F.interpolate(align_corners=False).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.models.norm import check_norm, make_norm
from instaseg.models.optimize import fold_norm

PROTONET_UPSAMPLING = ("bilinear", "pixel_shuffle")


def conv_block(
    in_channels: int,
    out_channels: int,
    norm: str | None,
    *,
    kernel_size: int = 3,
    groups: int = 1,
) -> nn.Sequential:
    """A conv (3x3 by default, "same" padding, a bias only without norm), optional norm,
    ReLU."""
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        groups=groups,
        bias=norm is None,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers = [conv] if norm is None else [conv, make_norm(norm, out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class PredictionHead(nn.Module):
    """YOLACT's prediction head, shared over pyramid levels (Fig. 4 of the paper).

    `num_convs` 3x3 convs (channels wide, optional norm, ReLU), then three convs of
    `kernel_size` (the paper's 3, or 1 as in YOLO heads, 9x cheaper): A (C + 1) class logits,
    4A box deltas and A k mask coefficients (tanh), A anchors per location. The paper has
    num_convs=1 without norm. With norm "bn" or "frozen_bn" each of the `num_levels` levels
    has its own norm after the shared convs (`LevelNormConv`): one set of running statistics
    would mix levels whose statistics differ. Initialisation: the class and box branches start
    from N(0, 0.01) weights, and the background bias from log(99 C), so that every anchor
    starts at foreground probability 0.01 (softmax over C classes + background): the loss of
    the many easy negatives does not swamp the first steps.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_prototypes: int,
        *,
        channels: int = 256,
        num_convs: int = 1,
        kernel_size: int = 3,
        norm: str | None = "gn",
        num_levels: int = 5,
        prior_probability: float = 0.01,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [channels] * num_convs
        pairs = list(zip(widths, widths[1:], strict=False))
        self.per_level_norm = norm in ("bn", "frozen_bn")
        if self.per_level_norm:
            self.convs = nn.ModuleList(LevelNormConv(a, b, num_levels, norm) for a, b in pairs)
        else:
            self.convs = nn.Sequential(*(conv_block(a, b, norm) for a, b in pairs))
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.num_prototypes = num_prototypes
        width = widths[-1]
        padding = kernel_size // 2
        self.class_logits = nn.Conv2d(
            width, num_anchors * (num_classes + 1), kernel_size, padding=padding
        )
        self.box_deltas = nn.Conv2d(width, num_anchors * 4, kernel_size, padding=padding)
        self.coefficients = nn.Conv2d(
            width, num_anchors * num_prototypes, kernel_size, padding=padding
        )
        for conv in (self.class_logits, self.box_deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.xavier_uniform_(self.coefficients.weight)
        nn.init.zeros_(self.coefficients.bias)
        with torch.no_grad():  # anchor a's background logit is channel a (C + 1) + C
            background = self.class_logits.bias.view(num_anchors, num_classes + 1)[:, -1]
            background.fill_(math.log(num_classes * (1 - prior_probability) / prior_probability))

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """features: per level [B, C_in, H_l, W_l] -> over all levels, fine to coarse and
        location-major (the anchor generator's order): class logits [B, N, C + 1], box deltas
        [B, N, 4] and mask coefficients [B, N, k], N = sum_l H_l W_l A."""
        logits, deltas, coefficients = [], [], []
        for level, feature in enumerate(features):
            hidden = self._hidden(feature, level)
            logits.append(_per_anchor(self.class_logits(hidden), self.num_classes + 1))
            deltas.append(_per_anchor(self.box_deltas(hidden), 4))
            coefficients.append(_per_anchor(self.coefficients(hidden), self.num_prototypes))
        return torch.cat(logits, 1), torch.cat(deltas, 1), torch.tanh(torch.cat(coefficients, 1))

    def _hidden(self, feature: Tensor, level: int) -> Tensor:
        if not self.per_level_norm:
            return self.convs(feature)
        for block in self.convs:
            feature = block(feature, level)
        return feature


class LevelNormConv(nn.Module):
    """A 3x3 conv shared by the pyramid levels, then the level's own BatchNorm and ReLU (shared
    weights, per-level statistics, as in EfficientDet's heads). `fold_norms_` turns it into
    one conv per level with its norm folded in, for inference (models.optimize)."""

    def __init__(self, in_channels: int, out_channels: int, num_levels: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.norms = nn.ModuleList(make_norm(norm, out_channels) for _ in range(num_levels))
        self.folded: nn.ModuleList | None = None

    def forward(self, feature: Tensor, level: int) -> Tensor:
        """feature: [B, C_in, H, W] of pyramid level `level` -> [B, C_out, H, W]."""
        if self.folded is not None:
            return F.relu(self.folded[level](feature))
        return F.relu(self.norms[level](self.conv(feature)))

    def fold_norms_(self) -> None:
        """Eval-mode only: replace the shared conv and the norms by one copy of the conv per
        level with that level's norm folded in (`models.optimize.fold_norm`)."""
        folded = []
        for norm in self.norms:
            conv = copy.deepcopy(self.conv)
            fold_norm(conv, norm)
            folded.append(conv)
        self.folded = nn.ModuleList(folded)
        del self.conv, self.norms


def _per_anchor(output: Tensor, values: int) -> Tensor:
    """[B, A * V, H, W] (channel a V + v) -> [B, H * W * A, V], location-major."""
    batch = output.shape[0]
    return output.permute(0, 2, 3, 1).reshape(batch, -1, values)


class Protonet(nn.Module):
    """Prototype masks from the finest pyramid level (Fig. 3 of the paper): three 3x3 convs,
    bilinear upsampling x2, a 3x3 conv (each conv `channels` wide with optional norm and
    ReLU), and a 1x1 conv to k prototypes with ReLU (unbounded, non-negative prototypes).

    separable_refine: the conv after the upsampling is depthwise 3x3 then pointwise 1x1
    (each with norm and ReLU), ~8x cheaper. At twice P3's resolution the paper's dense conv
    is the costliest single layer of a narrow model (a sixth of yolact_nano's FLOPs).

    upsampling "bilinear" is the paper's. "pixel_shuffle" (sub-pixel convolution, Shi et al.
    2016, "ESPCN") keeps every conv at P3's resolution: the refine conv runs before the
    upsampling, and the 1x1 conv predicts 4k values per P3 cell, which `F.pixel_shuffle`
    spreads over the 2 x 2 prototype cells the P3 cell covers (a learned 2x upsampling, the
    same as a 2 x 2 stride-2 transposed conv). Nothing runs at stride 4 but the ReLU: ~4x
    fewer FLOPs than the paper's layout after the three convs.
    """

    def __init__(
        self,
        in_channels: int,
        num_prototypes: int,
        *,
        channels: int = 256,
        norm: str | None = "gn",
        separable_refine: bool = False,
        upsampling: str = "bilinear",
    ) -> None:
        super().__init__()
        check_protonet_upsampling(upsampling, "upsampling")
        self.upsampling = upsampling
        self.convs = nn.Sequential(
            conv_block(in_channels, channels, norm),
            conv_block(channels, channels, norm),
            conv_block(channels, channels, norm),
        )
        if separable_refine:
            self.refine = nn.Sequential(
                *conv_block(channels, channels, norm, groups=channels),
                *conv_block(channels, channels, norm, kernel_size=1),
            )
        else:
            self.refine = conv_block(channels, channels, norm)
        # pixel_shuffle: output channel 4 j + 2 dy + dx is prototype j at sub-cell (dy, dx)
        outputs = num_prototypes * (4 if upsampling == "pixel_shuffle" else 1)
        self.prototypes = nn.Conv2d(channels, outputs, 1)
        nn.init.kaiming_normal_(self.prototypes.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.prototypes.bias)

    def forward(self, feature: Tensor) -> Tensor:
        """feature: P3 [B, C, H, W] -> prototypes [B, k, 2H, 2W], >= 0."""
        hidden = self.convs(feature)
        if self.upsampling == "pixel_shuffle":
            return F.relu(F.pixel_shuffle(self.prototypes(self.refine(hidden)), 2))
        hidden = F.interpolate(hidden, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.relu(self.prototypes(self.refine(hidden)))


class MaskIoUHead(nn.Module):
    """YOLACT++'s fast mask re-scoring network (Sec. 4.2 of the 2020 paper): a cropped mask
    [R, 1, H, W] (probabilities, prototype resolution) -> predicted IoU with its object for
    each class [R, C]: 3x3 stride-2 convs 8, 16, 32, 64, 128 wide with ReLU, a 1x1 conv to C
    with ReLU, and global max pooling."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (8, 16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_channels = width
        layers += [nn.Conv2d(in_channels, num_classes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        for module in self.net:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, masks: Tensor) -> Tensor:
        """masks: [R, 1, H, W] -> [R, C]."""
        return self.net(masks).amax(dim=(2, 3))


def semantic_head(in_channels: int, num_classes: int) -> nn.Conv2d:
    """1x1 conv P3 -> one logit per class and pixel; biases start at probability 0.01."""
    conv = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, -math.log(99.0))
    return conv


def semantic_loss(logits: Tensor, mask_targets: Tensor, labels: Tensor) -> Tensor:
    """BCE of the semantic logits [C, H_3, W_3] against each class's union of object masks
    (the prototype-resolution targets [G, H_p, W_p] averaged 2 x 2), summed over classes and
    averaged over pixels."""
    logits = logits.float()
    wanted = logits.new_zeros(logits.shape)
    if len(labels):
        objects = F.avg_pool2d(mask_targets[None], 2)[0]  # [G, H_3, W_3]
        for label in labels.unique().tolist():
            wanted[label] = objects[labels == label].amax(dim=0)
    loss = F.binary_cross_entropy_with_logits(logits, wanted, reduction="sum")
    return loss / (logits.shape[1] * logits.shape[2])


def box_crop_weights(boxes: Tensor, size: tuple[int, int], stride: float) -> Tensor:
    """The fraction of each prototype cell that each box covers, float [N, H, W].

    boxes: [N, 4] xyxy in the model frame; size: (H, W) of the prototype grid; stride: model
    pixels per cell. The weights factor into rows x columns, and they sum to the box's area in
    cells (inside the grid), so a loss weighted by them and divided by their sum is the mean
    over the box, however small the box.
    """
    cells = boxes / stride
    rows = _coverage(cells[:, 1], cells[:, 3], size[0])  # [N, H]
    cols = _coverage(cells[:, 0], cells[:, 2], size[1])  # [N, W]
    return rows[:, :, None] * cols[:, None, :]


def _coverage(start: Tensor, end: Tensor, cells: int) -> Tensor:
    """[N, cells]: the length of [start, end) inside each unit cell [c, c + 1)."""
    edges = torch.arange(cells, dtype=start.dtype, device=start.device)
    overlap = torch.minimum(end[:, None], edges + 1) - torch.maximum(start[:, None], edges)
    return overlap.clamp_(min=0)


def prototype_targets(
    masks: Tensor, model_size: tuple[int, int], grid_size: tuple[int, int], stride: int
) -> Tensor:
    """Original-frame bool masks [G, H0, W0] -> the fraction of each prototype cell they
    cover, float [G, H_p, W_p]: resized to the model frame (h, w) = model_size as the image
    is, padded at the bottom and right as the image is, and averaged over each cell's
    stride x stride pixels."""
    height, width = model_size
    if len(masks) == 0:
        return torch.zeros((0, *grid_size), dtype=torch.float32, device=masks.device)
    pixels = masks.float()
    if tuple(masks.shape[1:]) != (height, width):
        # antialias: a downscaled mask averages the pixels it drops, as the image does
        pixels = F.interpolate(pixels[None], size=model_size, mode="bilinear", antialias=True)[0]
    padding = (0, grid_size[1] * stride - width, 0, grid_size[0] * stride - height)
    return F.avg_pool2d(F.pad(pixels, padding)[None], stride)[0]


def paste_prototype_masks(
    prototypes: Tensor,
    coefficients: Tensor,
    boxes: Tensor,
    to_original: tuple[float, float],
    image_size: tuple[int, int],
    stride: float,
    threshold: float = 0.5,
) -> Tensor:
    """Masks in the original frame, bool [D, H0, W0], of the detections sigmoid(P c^T).

    prototypes P: [H_p, W_p, k] over the padded model frame (cell (r, c) centred at model
    pixel (stride (c + 0.5), stride (r + 0.5))); coefficients c: [D, k]; boxes: [D, 4] xyxy in
    the model frame; to_original: (x, y) factors from the model to the original frame. A pixel
    is set when its centre lies inside its box (mapped to the original frame) and the mask
    probabilities sampled there bilinearly (edge values held beyond the grid) are >=
    threshold. Each mask is assembled only over the cells its box's pixels sample, so the
    cost follows the boxes' areas, not D full images.
    """
    height, width = image_size
    masks = torch.zeros((len(boxes), height, width), dtype=torch.bool, device=prototypes.device)
    if len(boxes) == 0:
        return masks
    x_factor, y_factor = to_original
    grid_height, grid_width = prototypes.shape[:2]
    scale = boxes.new_tensor([x_factor, y_factor, x_factor, y_factor])
    pixel_ranges = (boxes.double() * scale.double() - 0.5).ceil()
    limits = pixel_ranges.new_tensor([width, height, width, height])
    pixel_ranges = torch.minimum(pixel_ranges.clamp(min=0), limits).long().tolist()
    # bilinear sampling is separable: rows of x_weights [W0, W_p] and y_weights [H0, H_p] hold
    # each pixel's weights on the (at most two) cells it reads; a mask is Y M X^T
    x_weights, x_cells = _interpolation_weights(width, x_factor, stride, grid_width, prototypes)
    y_weights, y_cells = _interpolation_weights(height, y_factor, stride, grid_height, prototypes)
    for n, (x0, y0, x1, y1) in enumerate(pixel_ranges):
        if x1 <= x0 or y1 <= y0:
            continue
        c0, c1 = x_cells[x0][0], x_cells[x1 - 1][1]  # the window of cells sampled
        r0, r1 = y_cells[y0][0], y_cells[y1 - 1][1]
        window = torch.sigmoid(prototypes[r0:r1, c0:c1] @ coefficients[n])  # [h_c, w_c]
        sampled = y_weights[y0:y1, r0:r1] @ window @ x_weights[x0:x1, c0:c1].T
        masks[n, y0:y1, x0:x1] = sampled >= threshold
    return masks


def _interpolation_weights(
    pixels: int, factor: float, stride: float, cells: int, like: Tensor
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Bilinear sampling along one axis of the prototype grid at the centres of the original
    pixels: weights [pixels, cells] in like's dtype, whose row j weighs the cells around pixel
    j's centre j + 0.5 (divided by `factor` into the model frame, then by `stride`, minus the
    half cell; held at the edge cells beyond the grid, as grid_sample's border padding); and
    for each pixel the cells [first, last) its row can be non-zero on."""
    centres = (torch.arange(pixels, dtype=torch.float64) + 0.5) / factor / stride - 0.5
    position = centres.clamp(0, cells - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=cells - 1)
    upper = position - low  # the weight of the higher cell
    weights = torch.zeros((pixels, cells), dtype=torch.float64)
    rows = torch.arange(pixels)
    weights.index_put_((rows, low), 1 - upper, accumulate=True)
    weights.index_put_((rows, high), upper, accumulate=True)
    reads = list(zip(low.tolist(), (high + 1).tolist(), strict=True))
    return weights.to(device=like.device, dtype=like.dtype), reads


def check_protonet_upsampling(upsampling: str, argument: str) -> None:
    """Raise ValueError naming `argument` unless upsampling is one of PROTONET_UPSAMPLING."""
    if upsampling not in PROTONET_UPSAMPLING:
        raise ValueError(f"{argument} must be one of {PROTONET_UPSAMPLING}, got {upsampling!r}")


def check_head_norm(norm: str | None, argument: str) -> None:
    """Raise ValueError naming `argument` unless norm is None or a known norm."""
    if norm is not None:
        check_norm(norm, argument)
