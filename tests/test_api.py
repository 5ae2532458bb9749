"""`instaseg.load_model` and `instaseg train | val | predict | convert` end to end, tiny."""

import json

import pytest
import torch

import instaseg
from instaseg.cli import main
from instaseg.data.synth import generate_synthetic
from instaseg.engine import load_weights

# A small network, so one training epoch takes seconds on a CPU.
TINY = {
    "width": 16,
    "fpn_channels": 32,
    "box_conv_dim": 32,
    "box_fc_dim": 64,
    "mask_conv_dim": 32,
    "box_batch_size_per_image": 64,
    "rpn_post_nms_topk_train": 200,
    "rpn_post_nms_topk_test": 100,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return generate_synthetic(root / "synth", num_train=4, num_val=2, seed=3, image_size=(64, 64))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    model = instaseg.load_model("mask_rcnn_r18_fpn", **TINY)
    summary = model.train(data, epochs=1, imgsz=64, batch=2, workers=0, out=out)
    return model, out, summary


def test_train_writes_checkpoints_with_metadata(trained):
    model, out, summary = trained
    assert summary["epochs"] == 1 and summary["steps"] == 2
    for name in (
        "best.safetensors",
        "last.safetensors",
        "last.state.pt",
        "metrics.jsonl",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    _, metadata = load_weights(out / "best.safetensors")
    assert metadata["model"] == "mask_rcnn_r18_fpn"
    assert metadata["classes"] == model.class_names and len(model.class_names) == 6
    assert metadata["image_size"] == 64 and metadata["model_kwargs"]["width"] == 16


def test_load_model_round_trip_predicts_the_same(trained, data):
    model, out, _ = trained
    loaded = instaseg.load_model(out / "best.safetensors")
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    (a,), (b,) = model.predict(image, conf=0.0), loaded.predict(image, conf=0.0)
    assert a.image_size == (50, 70) and torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.scores, b.scores)
    folder_results = loaded.predict(data.parent / "images" / "val", conf=0.0)
    assert len(folder_results) == 2 and folder_results[0].image_size == (64, 64)


def test_predict_runs_an_optimized_copy_that_follows_the_weights(trained):
    _, out, _ = trained
    # score threshold 0: the tiny model scores low, and the test needs detections
    loaded = instaseg.load_model(out / "best.safetensors", score_threshold=0.0)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    (fast,) = loaded.predict(image, conf=0.0)
    (plain,) = loaded.predict(image, conf=0.0, optimize=False)
    assert torch.equal(fast.labels, plain.labels) and len(fast) > 0
    torch.testing.assert_close(fast.scores, plain.scores, rtol=1e-4, atol=1e-5)
    copy = loaded._inference_copy.network
    assert copy is not loaded.network and not copy.training
    loaded.predict(image, conf=0.0)
    assert loaded._inference_copy.network is copy  # made once
    # new weights (here: the first class's logit pushed up in place) reach predict
    with torch.no_grad():
        loaded.network.roi_heads.box_predictor.cls_score.bias[0] += 5.0
    (shifted,) = loaded.predict(image, conf=0.0)
    (wanted,) = loaded.predict(image, conf=0.0, optimize=False)
    assert loaded._inference_copy.network is not copy
    torch.testing.assert_close(shifted.scores, wanted.scores, rtol=1e-4, atol=1e-5)
    assert not torch.equal(shifted.scores, fast.scores)
    # and so do new settings
    loaded.network.roi_heads.detections_per_image = 3
    assert len(loaded.predict(image, conf=0.0)[0]) == 3


def test_weights_of_another_architecture_get_an_error_naming_the_file(trained):
    """Options that change the architecture (here the mask head's width; a changed zoo default
    does the same to an old checkpoint) give one clear error, not torch's list of tensors."""
    _, out, _ = trained
    weights = out / "best.safetensors"
    with pytest.raises(ValueError) as error:
        instaseg.load_model(weights, mask_conv_dim=16)
    message = str(error.value)
    assert message.startswith(f"{weights}: the weights do not fit MaskRCNN as built")
    assert "with other shapes, e.g. roi_heads.mask_head" in message
    assert "convs.0.0.weight (32, 32, 3, 3) (model: (16, 32, 3, 3))" in message


def test_cli_val_and_predict(trained, data, tmp_path, capsys):
    _, out, _ = trained
    weights = str(out / "best.safetensors")
    pred = tmp_path / "pred.json"
    assert (
        main(
            [
                "val",
                "--weights",
                weights,
                "--data",
                str(data),
                "--workers",
                "0",
                "--save-json",
                str(pred),
            ]
        )
        == 0
    )
    assert "segm" in capsys.readouterr().out
    gt = json.loads((data.parent / "annotations" / "val.json").read_text())
    image_ids = {image["id"] for image in gt["images"]}
    category_ids = {c["id"] for c in gt["categories"]}
    for entry in json.loads(pred.read_text()):
        assert entry["image_id"] in image_ids and entry["category_id"] in category_ids
    save_dir = tmp_path / "predict"
    argv = ["predict", "--weights", weights, "--source", str(data.parent / "images" / "val")]
    assert main([*argv, "--conf", "0.0", "--save-dir", str(save_dir)]) == 0
    assert len(list(save_dir.glob("*.png"))) == 2
    assert len(json.loads((save_dir / "images.json").read_text())) == 2
    assert main([*argv, "--save-dir", str(save_dir)]) == 2  # refuses to overwrite results.json
    assert "already exists" in capsys.readouterr().err


def test_untrained_zoo_model_explains_itself():
    model = instaseg.load_model("mask_rcnn_r18_fpn")
    with pytest.raises(RuntimeError, match="no weights yet"):
        model.predict(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="did you mean"):
        instaseg.load_model("mask_rcnn_r81_fpn")


def test_cli_train_needs_a_length_and_known_model(data, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--out", "x"])
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                "--model",
                "mask_rcnn_r5_fpn",
                "--data",
                str(data),
                "--epochs",
                "1",
                "--out",
                "x",
            ]
        )
    assert "did you mean" in capsys.readouterr().err


def test_cli_model_options_are_checked(data, tmp_path, capsys):
    argv = ["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main([*argv, "--model-opt", "box_hed=2fc"]) == 2
    assert "did you mean box_head" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--model-opt", "no-equals-sign"])
    assert main([*argv, "--scale-range", "1.5", "0.5"]) == 2  # reaches the training transforms
    assert "scale_range must be (low, high) with 0 < low <= high" in capsys.readouterr().err


def test_train_seed_fixes_the_initial_network(data, tmp_path):
    weights = []
    for global_seed in (1, 2):  # a different global RNG state before each run
        torch.manual_seed(global_seed)
        model = instaseg.load_model("mask_rcnn_r18_fpn", **TINY)
        model.train(
            data, epochs=1, imgsz=64, batch=2, workers=0, out=tmp_path / str(global_seed), seed=7
        )
        weights.append(load_weights(tmp_path / str(global_seed) / "last.safetensors")[0])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
