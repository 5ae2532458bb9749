import pytest
import torch

from instaseg.ops.masks import rle_to_mask
from instaseg.structures import Instances


def make(n=3, h=8, w=10, scores=True):
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        masks[i, i : i + 2, i : i + 3] = True
    boxes = torch.tensor([[i, i, i + 3, i + 2] for i in range(n)], dtype=torch.float32).reshape(
        n, 4
    )
    return Instances(
        image_size=(h, w),
        boxes=boxes,
        labels=torch.arange(n),
        scores=torch.linspace(1, 0.1, n) if scores else None,
        masks=masks,
    )


def test_len_and_int_index_keeps_dimension():
    inst = make()
    assert len(inst) == 3
    one = inst[1]
    assert len(one) == 1 and one.labels.tolist() == [1] and one.masks.shape == (1, 8, 10)
    assert inst[-1].labels.tolist() == [2]
    with pytest.raises(IndexError):
        inst[3]


def test_bool_slice_and_list_index():
    inst = make()
    assert inst[torch.tensor([True, False, True])].labels.tolist() == [0, 2]
    assert inst[1:].labels.tolist() == [1, 2]
    assert inst[[2, 0]].labels.tolist() == [2, 0]
    with pytest.raises(IndexError, match="bool index"):
        inst[torch.tensor([True, False])]


def test_to_and_cat():
    inst = make()
    moved = inst.to("cpu")
    assert moved.boxes.device.type == "cpu" and torch.equal(moved.masks, inst.masks)
    joined = Instances.cat([inst, inst[0]])
    assert len(joined) == 4 and joined.labels.tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="scores"):
        Instances.cat([inst, make(scores=False)])
    with pytest.raises(ValueError, match="image_size"):
        Instances.cat([inst, make(h=9)])


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="labels must have shape"):
        Instances((4, 4), torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="masks must have shape"):
        Instances(
            (4, 4),
            torch.zeros(2, 4),
            torch.zeros(2, dtype=torch.long),
            masks=torch.zeros(2, 4, 5, dtype=torch.bool),
        )
    with pytest.raises(TypeError, match="bool"):
        Instances(
            (4, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), masks=torch.zeros(1, 4, 4)
        )
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\]"):
        Instances((4, 4), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))


def test_empty():
    empty = Instances.empty((5, 7))
    assert len(empty) == 0 and empty.masks.shape == (0, 5, 7) and empty.to_coco(1) == []


def test_to_coco_maps_labels_and_encodes_masks():
    inst = make()
    results = inst.to_coco(image_id=42, category_ids=[5, 7, 11])
    assert [r["category_id"] for r in results] == [5, 7, 11]
    assert all(r["image_id"] == 42 for r in results)
    assert results[1]["bbox"] == [1.0, 1.0, 3.0, 2.0]
    assert results[0]["score"] == pytest.approx(1.0)
    for r, mask in zip(results, inst.masks, strict=True):
        assert isinstance(r["segmentation"]["counts"], str)
        assert (rle_to_mask(r["segmentation"]) == mask.numpy()).all()
        assert r["area"] == mask.sum().item()
    with pytest.raises(ValueError, match="category_ids"):
        inst.to_coco(1, category_ids=[5])
