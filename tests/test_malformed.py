"""Malformed inputs: every error and warning names the culprit file and its id, line or field."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from format_fixtures import (
    coco_dict,
    make_coco,
    make_labelmap,
    make_masks_folder,
    make_via,
    make_yolo,
    rect_polygon,
    save_image,
    save_mask,
    via_dict,
    write_json,
)
from PIL import Image

from instaseg.data import DataError, DataWarning
from instaseg.data.config import load_data_config, resolve_dataset
from instaseg.data.formats import (
    read_coco,
    read_dataset,
    read_labelmap,
    read_masks_folder,
    read_via,
    read_yolo,
)

# ---- COCO json ------------------------------------------------------------------------------


def _coco_with(tmp_path, edit) -> object:
    """Write coco_dict() after `edit(data)` and return its path."""
    data = coco_dict()
    edit(data)
    return make_coco(tmp_path, data, images=False)


def test_json_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON at line 3, column 19"):
        read_coco(path)


def test_missing_json_file(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.json: file not found"):
        read_coco(tmp_path / "nowhere.json")


def test_missing_top_level_key(tmp_path):
    path = _coco_with(tmp_path, lambda d: d.pop("annotations"))
    with pytest.raises(
        DataError, match=r"annotations\.json: missing top-level key\(s\) \['annotations'\]"
    ):
        read_coco(path)


def test_via_file_given_as_coco_gets_a_hint(tmp_path):
    path = write_json(tmp_path / "via.json", via_dict())
    with pytest.raises(DataError, match=r"via\.json: missing top-level.*use format 'via'"):
        read_coco(path)


def test_top_level_key_of_wrong_type(tmp_path):
    path = _coco_with(tmp_path, lambda d: d.update(images={"id": 1}))
    with pytest.raises(DataError, match=r"annotations\.json: 'images' must be a list, got dict"):
        read_coco(path)


def test_unknown_image_id(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][1].update(image_id=99))
    with pytest.raises(
        DataError, match=r"annotations\.json, annotation id 12: image_id 99 is not in 'images'"
    ):
        read_coco(path)


def test_unknown_category_id(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].update(category_id=4))
    with pytest.raises(
        DataError, match=r"annotation id 11: category_id 4 is not in 'categories' \[3, 7, 10\]"
    ):
        read_coco(path)


def test_polygon_with_two_points(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]))
    with pytest.raises(
        DataError, match=r"image id 1, annotation id 11: field 'segmentation': .*2 points"
    ):
        read_coco(path)


def test_polygon_with_odd_coordinates(tmp_path):
    path = _coco_with(
        tmp_path, lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5, 5, 1]])
    )
    with pytest.raises(
        DataError, match=r"annotation id 11: field 'segmentation': .*odd number of coordinates"
    ):
        read_coco(path)


def test_rle_size_differs_from_image(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][1]["segmentation"].update(size=[10, 13]))
    with pytest.raises(
        DataError, match=r"annotation id 12: field 'segmentation': RLE size \[10, 13\]"
    ):
        read_coco(path)


def test_corrupt_compressed_rle_counts(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][1]["segmentation"].update(counts="0~~"))
    with pytest.raises(
        DataError, match=r"annotation id 12: field 'segmentation': .*invalid character '~'"
    ):
        read_coco(path)


def test_rle_counts_not_covering_the_image(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][2]["segmentation"].update(counts=[5, 3]))
    with pytest.raises(
        DataError, match=r"annotation id 13: field 'segmentation': .*sum to 8, expected H\*W = 72"
    ):
        read_coco(path)


def test_segmentation_neither_list_nor_dict(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].update(segmentation="1 2 3"))
    with pytest.raises(
        DataError,
        match=r"annotation id 11: field 'segmentation': must be a list of polygons or an RLE",
    ):
        read_coco(path)


def test_missing_segmentation(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].pop("segmentation"))
    with pytest.raises(DataError, match=r"annotation id 11: missing field 'segmentation'"):
        read_coco(path)


def test_height_not_an_int(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["images"][1].update(height="8"))
    with pytest.raises(
        DataError,
        match=r"annotations\.json, image id 5: field 'height' must be a positive integer, got '8'",
    ):
        read_coco(path)


def test_iscrowd_not_zero_or_one(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].update(iscrowd=2))
    with pytest.raises(DataError, match=r"annotation id 11: field 'iscrowd' must be 0 or 1, got 2"):
        read_coco(path)


def test_malformed_bbox(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].update(bbox=[1, 2, 3]))
    with pytest.raises(
        DataError, match=r"annotation id 11: field 'bbox' must be \[x, y, width, height\]"
    ):
        read_coco(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["images"][1].update(id=1), r"image id 1: duplicate image id"),
        (lambda d: d["annotations"][1].update(id=11), r"annotation id 11: duplicate annotation id"),
        (lambda d: d["categories"][1].update(id=10), r"categories\[1\]: duplicate category id 10"),
        (
            lambda d: d["images"][2].update(file_name="a.png"),
            r"image id 9: duplicate file_name 'a.png' \(also image id 1\)",
        ),
    ],
    ids=["image", "annotation", "category", "file_name"],
)
def test_duplicates(tmp_path, edit, message):
    with pytest.raises(DataError, match=r"annotations\.json, " + message):
        read_coco(_coco_with(tmp_path, edit))


def test_bbox_outside_image_is_clipped_with_warning(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"][0].update(bbox=[5, 1, 30, 3]))
    with pytest.warns(
        DataWarning,
        match=r"annotations\.json: bbox outside its image.*image id 1, annotation id 11",
    ):
        dataset = read_coco(path)
    assert dataset.load_instances(0).boxes[0].tolist() == [5, 1, 11, 4]  # from the mask


def test_zero_area_instance_is_dropped_with_warning(tmp_path):
    # a sliver between pixel centres covers no pixel
    path = _coco_with(
        tmp_path, lambda d: d["annotations"][0].update(segmentation=[rect_polygon(2.1, 1, 2.4, 5)])
    )
    with pytest.warns(
        DataWarning, match=r"zero-area instance dropped.*image id 1, annotation id 11"
    ):
        dataset = read_coco(path)
    assert dataset.num_instances() == 2


def test_names_disagreeing_with_the_json(tmp_path):
    with pytest.raises(
        DataError, match=r"annotations\.json: names \['a'\] do not match .*\['car', 'dog', 'kite'\]"
    ):
        read_coco(make_coco(tmp_path, images=False), names=["a"])


def test_missing_image_file_errors_or_is_skipped(tmp_path):
    dataset = read_coco(make_coco(tmp_path))
    (tmp_path / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.png: image file not found"):
        dataset[0]
    skipping = read_coco(tmp_path / "annotations.json", skip_bad=True)
    with pytest.warns(DataWarning, match=r"skipping unreadable image: .*a\.png"):
        image, _ = skipping[0]
    assert image.shape == (3, 8, 9)  # the next readable image


# ---- YOLO -----------------------------------------------------------------------------------

NAMES = {2: "boat", 9: "cat"}


def _yolo_with_line(tmp_path, line: str):
    root = make_yolo(tmp_path)
    (root / "labels" / "train" / "a.txt").write_text("9 0.1 0.1 0.5 0.1 0.5 0.5\n" + line + "\n")
    return root


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("4 0.1 0.1 0.5 0.1 0.5 0.5", r"class id 4 is not in names \(ids \[2, 9\]\)"),
        ("x 0.1 0.1 0.5 0.1 0.5 0.5", r"class id 'x' is not a number"),
        ("2 0.1 0.1 0.5 abc 0.5 0.5", r"coordinate 4 \('abc'\) is not a number"),
        ("2 0.1 0.1 0.5 0.1 0.5", r"odd number of coordinates \(5\)"),
        (
            "2 0.5 0.5 0.2 0.3",
            r"polygon has 2 points; at least 3 are needed \(this looks like a detection box",
        ),
        ("2 0.1 0.1 40 0.1 40 60", r"coordinates must be normalised to \[0, 1\], found 0.1..60"),
    ],
    ids=[
        "class-not-in-names",
        "class-not-a-number",
        "coordinate-not-a-number",
        "odd",
        "two-points",
        "pixels",
    ],
)
def test_bad_yolo_line(tmp_path, line, message):
    root = _yolo_with_line(tmp_path, line)
    with pytest.raises(DataError, match=r"a\.txt, line 2: " + message):
        read_yolo(root, "train", names=NAMES)


def test_yolo_coordinates_slightly_outside_are_clipped_with_warning(tmp_path):
    root = _yolo_with_line(tmp_path, "2 -0.05 0 1.05 0 1.05 1 -0.05 1")
    with pytest.warns(
        DataWarning, match=r"coordinates outside \[0, 1\] clipped.*a\.txt, line 2: -0.05..1.05"
    ):
        dataset = read_yolo(root, "train", names=NAMES)
    assert dataset.load_instances(0).masks[1].all()


def test_yolo_missing_labels_folder(tmp_path):
    root = make_yolo(tmp_path)
    (root / "labels" / "train" / "a.txt").unlink()
    (root / "labels" / "train" / "c.txt").unlink()
    (root / "labels" / "train").rmdir()
    with pytest.raises(DataError, match=r"labels folder .*labels/train not found"):
        read_yolo(root, "train", names=NAMES)


def test_yolo_folder_needs_names(tmp_path):
    with pytest.raises(DataError, match=r"does not name its classes: pass names"):
        read_yolo(make_yolo(tmp_path), "train")


def test_yolo_yaml_split_missing_and_unknown_key(tmp_path):
    make_yolo(tmp_path)
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("train: images/train\nnames: [a, b]\n")
    with pytest.raises(
        DataError, match=r"data\.yaml: no image folder for split 'val'.*\['train'\]"
    ):
        read_yolo(yaml_path, "val")
    yaml_path.write_text("train: images/train\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DataError, match=r"data\.yaml: nc is 3 but names has 2 classes"):
        read_yolo(yaml_path, "train")


def test_corrupt_image_errors_or_is_skipped(tmp_path):
    root = make_yolo(tmp_path)
    (root / "images" / "train" / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"b\.png: cannot read image header"):
        read_yolo(root, "train", names=NAMES)
    with pytest.warns(
        DataWarning, match=r"unreadable image skipped.*b\.png: cannot read image header"
    ):
        dataset = read_yolo(root, "train", names=NAMES, skip_bad=True)
    assert [r.file_name for r in dataset.records] == ["a.png", "c.png"]


def test_yolo_label_file_without_image_is_reported(tmp_path):
    root = make_yolo(tmp_path)
    (root / "labels" / "train" / "ghost.txt").write_text("2 0.1 0.1 0.5 0.1 0.5 0.5\n")
    with pytest.warns(DataWarning, match=r"label file without an image, ignored.*ghost\.txt"):
        read_yolo(root, "train", names=NAMES)


# ---- VIA ------------------------------------------------------------------------------------


def _via_with(tmp_path, edit):
    make_via(tmp_path, 2)
    data = via_dict(2)
    edit(data)
    return write_json(tmp_path / "via_region_data.json", data)


def _region(data, filename="a.jpg", index=0):
    entry = next(e for e in data.values() if e["filename"] == filename)
    return entry["regions"][index]


def test_via_missing_filename(tmp_path):
    path = _via_with(tmp_path, lambda d: d["b.png456"].pop("filename"))
    with pytest.raises(
        DataError, match=r"via_region_data\.json, entry 'b.png456': missing 'filename'"
    ):
        read_via(path)


def test_via_unknown_shape(tmp_path):
    path = _via_with(
        tmp_path, lambda d: _region(d, "b.png", 1)["shape_attributes"].update(name="blob")
    )
    with pytest.raises(
        DataError, match=r"via_region_data\.json, b\.png, region 1: unsupported shape 'blob'"
    ):
        read_via(path)


def test_via_point_encloses_nothing(tmp_path):
    path = _via_with(
        tmp_path, lambda d: _region(d)["shape_attributes"].update(name="point", cx=1, cy=1)
    )
    with pytest.raises(
        DataError, match=r"a\.jpg, region 0: unsupported shape 'point' \(it encloses no area\)"
    ):
        read_via(path)


def test_via_mismatched_point_lists(tmp_path):
    path = _via_with(tmp_path, lambda d: _region(d)["shape_attributes"]["all_points_y"].pop())
    with pytest.raises(
        DataError, match=r"a\.jpg, region 0: all_points_x has 4 values but all_points_y has 3"
    ):
        read_via(path)


def test_via_non_numeric_shape_attribute(tmp_path):
    path = _via_with(
        tmp_path, lambda d: _region(d, "a.jpg", 1)["shape_attributes"].update(width="4")
    )
    with pytest.raises(
        DataError, match=r"a\.jpg, region 1: shape_attributes\['width'\] must be a number"
    ):
        read_via(path)


def test_via_region_without_class(tmp_path):
    path = _via_with(tmp_path, lambda d: _region(d, "a.jpg", 1)["region_attributes"].clear())
    with pytest.raises(
        DataError, match=r"a\.jpg, region 1: region_attributes\['kind'\] must name one class"
    ):
        read_via(path, class_attribute="kind")


def test_via_class_not_in_names(tmp_path):
    path = make_via(tmp_path)
    with pytest.raises(
        DataError, match=r"via_region_data\.json: region classes \['square'\] are not in names"
    ):
        read_via(path, class_attribute="kind", names=["round"])


def test_via_missing_image(tmp_path):
    path = make_via(tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png: image file not found"):
        read_via(path)
    with pytest.warns(DataWarning, match=r"unreadable image skipped.*b\.png"):
        assert len(read_via(path, skip_bad=True)) == 2


def test_via_size_field_is_not_checked(tmp_path):
    path = _via_with(tmp_path, lambda d: d["a.jpg123"].update(size=999999))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert read_via(path).num_instances() == 4


# ---- masks folder ---------------------------------------------------------------------------


def test_masks_folder_sample_without_images_dir(tmp_path):
    make_masks_folder(tmp_path)
    (tmp_path / "s2" / "images" / "s2.png").rename(tmp_path / "s2" / "s2.png")
    (tmp_path / "s2" / "images").rmdir()
    with pytest.raises(DataError, match=r"s2: missing images/ folder"):
        read_masks_folder(tmp_path)


def test_masks_folder_mask_size_mismatch_names_the_mask(tmp_path):
    make_masks_folder(tmp_path)
    save_mask(tmp_path / "s1" / "masks" / "m1.png", np.ones((8, 9), bool))
    with pytest.raises(
        DataError, match=r"s1/masks/m1\.png: mask is 8x9 \(HxW\) but its image is 8x10"
    ):
        read_masks_folder(tmp_path)


def test_masks_folder_corrupt_mask(tmp_path):
    make_masks_folder(tmp_path)
    (tmp_path / "s1" / "masks" / "m0.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"s1/masks/m0\.png: cannot decode mask"):
        read_masks_folder(tmp_path)


def test_masks_folder_without_any_masks_warns(tmp_path):
    save_image(tmp_path / "t1" / "images" / "t1.png", 4, 4)
    with pytest.warns(DataWarning, match=r"no sample has a masks/ folder.*unlabelled"):
        read_masks_folder(tmp_path)


# ---- label maps -----------------------------------------------------------------------------


def test_labelmap_without_matching_image(tmp_path):
    make_labelmap(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / "zz.png")
    with pytest.raises(DataError, match=r"labels/zz\.png: no image named zz\.<ext>"):
        read_labelmap(tmp_path)


def test_labelmap_size_mismatch(tmp_path):
    make_labelmap(tmp_path)
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(DataError, match=r"labels/a\.png: is 6x7 \(HxW\) but its image is 6x8"):
        read_labelmap(tmp_path)


def test_labelmap_in_colour(tmp_path):
    make_labelmap(tmp_path)
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(
        DataError, match=r"labels/a\.png: must be a single-channel 8- or 16-bit image, got mode RGB"
    ):
        read_labelmap(tmp_path)


def test_labelmap_class_maps_need_names(tmp_path):
    make_labelmap(tmp_path)
    (tmp_path / "classes").mkdir()
    with pytest.raises(DataError, match=r"class maps hold numbers 1..K: pass names"):
        read_labelmap(tmp_path, classes="classes")


# ---- config yaml and dispatch ---------------------------------------------------------------


def _config(tmp_path, text: str):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return path


def test_config_unknown_format_suggests(tmp_path):
    with pytest.raises(
        DataError, match=r"data\.yaml: unknown format 'yollo'; did you mean 'yolo'\?"
    ):
        load_data_config(_config(tmp_path, "format: yollo\ntrain: {images: a}\n"))


def test_config_unknown_key_suggests(tmp_path):
    path = _config(tmp_path, "format: coco\nnmaes: [a]\ntrain: {json: a.json}\n")
    with pytest.raises(
        DataError, match=r"data\.yaml: unknown key 'nmaes' in the config; did you mean 'names'\?"
    ):
        load_data_config(path)


def test_config_unknown_split_key_suggests(tmp_path):
    path = _config(tmp_path, "format: coco\ntrain: {jsn: a.json}\n")
    with pytest.raises(
        DataError,
        match=r"data\.yaml: unknown key 'jsn' in split 'train' \(format coco\); "
        r"did you mean 'json'\?",
    ):
        load_data_config(path)


def test_config_missing_split_key(tmp_path):
    path = _config(tmp_path, "format: labelmap\ntrain: {images: im}\n")
    with pytest.raises(DataError, match=r"data\.yaml: split 'train' is missing \['labels'\]"):
        load_data_config(path)


def test_config_missing_split(tmp_path):
    make_coco(tmp_path / "t")
    config = load_data_config(
        _config(tmp_path, "format: coco\ntrain: {json: t/annotations.json}\n")
    )
    with pytest.raises(DataError, match=r"data\.yaml: no split 'val'; the config has \['train'\]"):
        config.dataset("val")
    with pytest.raises(DataError, match=r"data\.yaml: no split: give at least one of train"):
        load_data_config(_config(tmp_path, "format: coco\n"))


def test_config_missing_names_where_required(tmp_path):
    with pytest.raises(DataError, match=r"data\.yaml: missing 'names': YOLO labels hold class ids"):
        load_data_config(_config(tmp_path, "format: yolo\ntrain: {images: images/train}\n"))


def test_config_yaml_syntax_error(tmp_path):
    with pytest.raises(
        DataError, match=r"data\.yaml: invalid YAML at line 2, column 22: expected <block end>"
    ):
        load_data_config(_config(tmp_path, "format: coco\ntrain: {json: a.json}}\nval: x\n"))


def test_config_missing_format(tmp_path):
    with pytest.raises(DataError, match=r"data\.yaml: missing 'format'"):
        load_data_config(_config(tmp_path, "train: {json: a.json}\n"))


def test_resolve_dataset_folder_without_config(tmp_path):
    with pytest.raises(
        DataError, match=r"expected one of data\.yaml or dataset\.yaml in this folder, found none"
    ):
        resolve_dataset(tmp_path)


def test_read_dataset_unknown_format(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown dataset format 'lablemap'; did you mean 'labelmap'\?"
    ):
        read_dataset("lablemap", tmp_path)


def test_labelmap_two_label_maps_for_one_image(tmp_path):
    make_labelmap(tmp_path)
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "labels" / "a.tif")
    with pytest.raises(DataError, match=r"labels/a\.tif: a second label map for a\.png"):
        read_labelmap(tmp_path)


def test_labelmap_instance_with_mixed_classes_warns(tmp_path):
    maps = make_labelmap(tmp_path)
    (tmp_path / "images" / "d.jpg").unlink()
    (tmp_path / "classes").mkdir()
    for stem, label_map in maps.items():
        classes = (label_map > 0).astype(np.uint8)
        if stem == "a":
            classes[1, 1] = 2  # one pixel of instance 1 disagrees
        Image.fromarray(classes).save(tmp_path / "classes" / f"{stem}.png")
    with pytest.warns(DataWarning, match=r"disagree on their class.*classes/a\.png, instance 1"):
        dataset = read_labelmap(tmp_path, classes="classes", names=["x", "y"])
    assert dataset.load_instances(0).labels.tolist() == [0, 0]


def test_coco_annotation_not_an_object(tmp_path):
    path = _coco_with(tmp_path, lambda d: d["annotations"].insert(1, [1, 2, 3]))
    with pytest.raises(DataError, match=r"annotations\.json: annotations\[1\] must be an object"):
        read_coco(path)


def test_ultralytics_yaml_unknown_key_suggests(tmp_path):
    make_yolo(tmp_path)
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("train: images/train\nnmes: [a, b]\n")
    with pytest.raises(DataError, match=r"data\.yaml: unknown key 'nmes' .*did you mean 'names'\?"):
        read_yolo(yaml_path, "train")


def test_via_regions_of_wrong_type(tmp_path):
    path = _via_with(tmp_path, lambda d: d["a.jpg123"].update(regions="none"))
    with pytest.raises(DataError, match=r"via_region_data\.json, a\.jpg: 'regions' must be a list"):
        read_via(path)


def test_via3_project_is_refused(tmp_path):
    path = write_json(
        tmp_path / "v3.json", {"project": {}, "config": {}, "file": {}, "metadata": {}}
    )
    with pytest.raises(DataError, match=r"v3\.json: VIA 3 projects are not supported"):
        read_via(path)


def test_coco_file_given_as_via_gets_a_hint(tmp_path):
    with pytest.raises(DataError, match=r"annotations\.json: this is a COCO json, not VIA"):
        read_via(make_coco(tmp_path, images=False))
