"""`instaseg eval`: tables, the --out schema, plots, cells, panoptic, errors; DSB 2018."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from eval_synthetic import jitter_results, random_coco_set
from PIL import Image

from instaseg.cli import main
from instaseg.data.errors import DataWarning

STAT_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DSB = SHARED / "dsb2018" / "stage1_train"


def write_set(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    gt, _ = random_coco_set(seed, num_images=6, crowded_image=False)
    results = jitter_results(gt, seed)
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "gt.json", folder / "results.json"


def fractions(values: dict) -> bool:
    return all(v is None or 0.0 <= v <= 1.0 for v in values.values())


def test_tables_schema_and_plots(tmp_path, capsys):
    gt, results = write_set(tmp_path)
    out, plots = tmp_path / "out" / "metrics.json", tmp_path / "plots"
    argv = [
        "eval",
        "--gt",
        str(gt),
        "--pred",
        str(results),
        "--out",
        str(out),
        "--plots",
        str(plots),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        printed.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") == 3
    )
    assert printed.count("Average Recall     (AR)") == 3 * 6
    assert "segm AP" in printed and "boundary AP" in printed and "class2" in printed
    report = json.loads(out.read_text())
    assert list(report) == ["segm", "bbox", "boundary", "per_class"]
    for iou_type in ("segm", "bbox", "boundary"):
        assert list(report[iou_type]) == STAT_KEYS and fractions(report[iou_type])
        assert 0 < report[iou_type]["AP"] < 1
        assert set(report["per_class"][iou_type]) == {"class1", "class2", "class3"}
        assert all(fractions(v) for v in report["per_class"][iou_type].values())
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["per_class_ap.png", "pr_bbox.png", "pr_boundary.png", "pr_segm.png"]
    for name in names:
        with Image.open(plots / name) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_cells_and_one_iou_type(tmp_path, capsys):
    gt, results = write_set(tmp_path, seed=1)
    out = tmp_path / "metrics.json"
    argv = ["eval", "--gt", str(gt), "--pred", str(results), "--iou-type", "segm"]
    assert main([*argv, "--metrics", "coco", "cells", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report) == ["segm", "per_class", "cells"]
    assert fractions(report["cells"]) and 0 < report["cells"]["AP50"] < 1
    assert "AP@tau" in capsys.readouterr().out
    assert main([*argv, "--metrics", "cells", "--out", str(out), "--by-image"]) == 0
    assert list(json.loads(out.read_text())) == ["cells"]


def test_typos_and_bad_data(tmp_path, capsys, caplog):
    gt, results = write_set(tmp_path)
    with pytest.raises(SystemExit):
        main(["eval", "--gt", str(gt), "--pred", str(results), "--iou-type", "sgm"])
    assert "did you mean 'segm'" in capsys.readouterr().err
    entries = json.loads(results.read_text())
    entries[4]["image_id"] = 12345
    results.write_text(json.dumps(entries))
    with caplog.at_level(logging.ERROR):
        assert main(["eval", "--gt", str(gt), "--pred", str(results)]) == 1
    assert "entry 4 (image_id 12345" in caplog.text


def test_panoptic(tmp_path, capsys):
    from test_eval_panoptic import GT_IDS, GT_SEGMENTS, PRED_IDS, PRED_SEGMENTS, write_panoptic

    gt = write_panoptic(tmp_path, "gt", {1: (GT_IDS, GT_SEGMENTS)})
    pred = write_panoptic(tmp_path, "pred", {1: (PRED_IDS, PRED_SEGMENTS)})
    out = tmp_path / "pq.json"
    assert (
        main(
            [
                "eval",
                "--gt",
                str(gt),
                "--pred",
                str(pred),
                "--metrics",
                "panoptic",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())["panoptic"]
    assert report["PQ"] == pytest.approx(7 / 16) and report["PQ_th"] == pytest.approx(7 / 8)
    assert "things" in capsys.readouterr().out


def dsb_subset(tmp_path: Path, count: int) -> Path:
    """A DSB 2018 root with the first `count` samples, as symlinks (the data stays shared)."""
    root = tmp_path / "dsb_subset"
    root.mkdir()
    for sample in sorted(DSB.iterdir())[:count]:
        (root / sample.name).symlink_to(sample, target_is_directory=True)
    return root


@pytest.mark.shared_data
@pytest.mark.skipif(not DSB.is_dir(), reason="../shared/data is absent")
def test_dsb2018_against_a_jittered_copy(tmp_path, capsys):
    from instaseg.data.formats import read_dataset, write_coco

    gt_path = tmp_path / "dsb_gt.json"
    gt = write_coco(read_dataset("masks", dsb_subset(tmp_path, 40)), gt_path)
    results = jitter_results(copy.deepcopy(gt), seed=2018, max_shift=1)
    (tmp_path / "results.json").write_text(json.dumps(results))
    out, plots = tmp_path / "metrics.json", tmp_path / "plots"
    argv = [
        "eval",
        "--gt",
        str(gt_path),
        "--pred",
        str(tmp_path / "results.json"),
        "--metrics",
        "coco",
        "cells",
    ]
    with pytest.warns(DataWarning, match="beyond maxDets=100"):  # some images hold 200+ nuclei
        assert main([*argv, "--out", str(out), "--plots", str(plots)]) == 0
    report = json.loads(out.read_text())
    segm, cells = report["segm"], report["cells"]
    assert 0.3 < segm["AP"] < 1 and segm["AP50"] > segm["AP75"] > segm["AP"] * 0.5
    assert report["boundary"]["AP"] <= segm["AP"] + 0.05
    assert 0.5 < cells["AP50"] < 1 and cells["AP"] < cells["AP50"]
    assert 0 < cells["AJI"] < 1 and 0 < cells["SBD"] < 1 and 0 < cells["boundary_F"] <= 1
    assert (plots / "pr_segm.png").is_file() and (plots / "per_class_ap.png").is_file()
    assert np.isclose(report["per_class"]["segm"]["nucleus"]["AP"], segm["AP"])
