"""`instaseg data ...` and `instaseg demo` end to end on tiny generated data."""

import json

import pytest
from format_fixtures import make_masks_folder, make_via
from pycocotools.coco import COCO

from instaseg.cli import main
from instaseg.data.errors import DataWarning
from instaseg.data.formats import read_coco, read_dataset
from instaseg.ops.masks import segmentation_to_mask


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--train",
                "6",
                "--val",
                "3",
                "--size",
                "96",
                "128",
            ]
        )
        == 0
    )
    return out


def test_synth_writes_yaml_and_refuses_to_overwrite(synth, capsys):
    assert (synth / "data.yaml").is_file()
    assert main(["data", "synth", "--out", str(synth), "--train", "2", "--val", "1"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_stats_prints_every_split_and_writes_json(synth, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["data", "stats", str(synth), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "== train" in text and "== val" in text and "instances per image" in text
    report = json.loads(out.read_text())
    assert report["train"]["images"] == 6 and report["val"]["images"] == 3
    gt = COCO(str(synth / "annotations" / "train.json"))
    assert report["train"]["instances"] == len(gt.anns)


def test_show_writes_pngs_and_asks_before_replacing(synth, tmp_path, capsys):
    out = tmp_path / "show"
    assert (
        main(["data", "show", str(synth), "--split", "val", "--out", str(out), "--num", "2"]) == 0
    )
    assert len(list((out / "val").glob("*.png"))) == 2
    assert (
        main(["data", "show", str(synth), "--split", "val", "--out", str(out), "--num", "2"]) == 2
    )
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["data", "show", str(synth), "--split", "val", "--out", str(out), "--overwrite"]) == 0
    )


def test_split_is_deterministic_and_loadable(synth, tmp_path):
    args = ["data", "split", str(synth), "--split", "train", "--val", "0.34", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "val.json").read_text() == (tmp_path / "b" / "val.json").read_text()
    train = read_dataset(
        "coco", tmp_path / "a" / "train.json", image_root=synth / "images" / "train"
    )
    val = read_coco(tmp_path / "a" / "val.json", synth / "images" / "train")
    assert len(train) + len(val) == 6 and len(val) == 2
    # the written data.yaml points at the images: items load through it
    assert main(["data", "stats", str(tmp_path / "a")]) == 0
    image, _ = read_dataset(
        "coco", tmp_path / "a" / "val.json", image_root=synth / "images" / "train"
    )[0]
    assert image.shape[0] == 3


def test_convert_masks_folder_relative_to_src(tmp_path):
    masks = make_masks_folder(tmp_path / "cells")
    out = tmp_path / "cells.json"
    with pytest.warns(DataWarning, match="empty mask dropped"):  # the fixture has one
        assert (
            main(
                [
                    "data",
                    "convert",
                    "--from",
                    "masks",
                    str(tmp_path / "cells"),
                    "--to",
                    "coco",
                    str(out),
                ]
            )
            == 0
        )
    gt = COCO(str(out))
    assert len(gt.imgs) == 3  # s3 has no masks/ folder: a negative
    assert len(gt.anns) == sum(len(m) for m in masks.values())
    for image in gt.imgs.values():
        assert (tmp_path / "cells" / image["file_name"]).is_file()
        assert image["file_name"].split("/")[1] == "images"
    for ann in gt.anns.values():
        image = gt.imgs[ann["image_id"]]
        assert (
            segmentation_to_mask(ann["segmentation"], image["height"], image["width"]).sum()
            == ann["area"]
        )


def test_convert_via_and_refuse_existing_output(tmp_path, capsys):
    json_path = make_via(tmp_path / "balloons")
    out = tmp_path / "via.json"
    assert main(["data", "convert", "--from", "via", str(json_path), "--to", "coco", str(out)]) == 0
    for image in COCO(str(out)).imgs.values():
        assert (json_path.parent / image["file_name"]).is_file()
    assert main(["data", "convert", "--from", "via", str(json_path), "--to", "coco", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_unknown_format_suggests_closest(capsys):
    with pytest.raises(SystemExit):
        main(["data", "convert", "--from", "cocoo", "x", "--to", "coco", "y.json"])
    assert "did you mean 'coco'" in capsys.readouterr().err


def test_missing_data_is_a_clean_error(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_demo_writes_overlays_and_summary(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--out", out, "--train", "4", "--val", "2", "--minutes", "0"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["splits"]["train"]["images"] == 4
    assert list((tmp_path / "demo" / "overlays" / "val").glob("*.png"))
    assert "demo summary" in capsys.readouterr().out
