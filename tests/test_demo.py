"""`run_demo` end to end with a tiny network and a few seconds of training."""

import json

from test_api import TINY  # the same small network as the API tests

from instaseg.demo import format_summary, run_demo


def test_demo_trains_evaluates_and_predicts(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "train").mkdir(parents=True)
    (out / "train" / "metrics.jsonl").write_text("{}\n")  # an earlier demo's run: replaced
    summary = run_demo(
        out,
        num_train=4,
        num_val=2,
        image_size=(64, 64),
        train_minutes=0.02,
        model="mask_rcnn_r18_fpn",
        model_kwargs=TINY,
        batch=2,
        workers=0,
        num_overlays=2,
    )
    trained = summary["model"]
    assert trained["steps"] >= 1
    assert 0.0 <= trained["val"]["segm"]["AP"] <= 1.0
    for name in ("best.safetensors", "last.safetensors", "curves.png", "metrics.jsonl"):
        assert (out / "train" / name).is_file(), name
    predictions = out / "predictions"
    assert len(list((predictions / "overlays").glob("*.png"))) == 2
    assert isinstance(json.loads((predictions / "val.json").read_text()), list)
    metrics = json.loads((predictions / "metrics.json").read_text())
    assert set(metrics) >= {"segm", "bbox"}
    assert list((predictions / "plots").glob("*.png"))
    assert json.loads((out / "summary.json").read_text())["model"]["steps"] == trained["steps"]
    printed = capsys.readouterr().out
    assert "val mask AP" in printed and format_summary(summary) in printed
