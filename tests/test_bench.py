"""`instaseg.bench.benchmark` and `instaseg bench` on a tiny Mask R-CNN (no timing thresholds)."""

import json

import pytest
import torch

from instaseg.bench import _percentile, benchmark, format_report
from instaseg.cli import main
from instaseg.engine.checkpoint import save_weights
from instaseg.models.zoo import build_model

TINY = {
    "width": 8,
    "fpn_channels": 32,
    "box_conv_dim": 32,
    "box_fc_dim": 64,
    "mask_conv_dim": 32,
    "anchor_sizes": (16, 32, 64, 128, 256),
    "rpn_pre_nms_topk_test": 200,
    "rpn_post_nms_topk_test": 50,
    "min_size": 64,
    "max_size": 64,
    # nothing passes on its own, so model_info's FLOP count runs no mask pasting (slow under
    # FlopCounterMode); forced detections lower it to 0 while timing
    "score_threshold": 1.0,
}
FAST = {"imgsz": 64, "threads": 1, "runs": 2, "warmup": 1, "batch": 2}


def tiny_model(**overrides):
    torch.manual_seed(0)
    return build_model("mask_rcnn_r18_fpn", 3, **{**TINY, **overrides})


@pytest.fixture(scope="module")
def result_and_model():
    model = tiny_model()
    threads = torch.get_num_threads()
    result = benchmark(model, detections=20, **FAST)
    assert torch.get_num_threads() == threads  # restored
    return result, model


def test_result_has_the_schema(result_and_model):
    result, model = result_and_model
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["gflops"] > 0
    latency = result["latency_ms"]
    assert set(latency) == {"median", "p90", "preprocess", "network", "postprocess"}
    assert all(value > 0 for value in latency.values())
    assert latency["p90"] >= latency["median"]
    assert latency["network"] <= latency["median"] * 2  # a stage of the same calls
    assert result["throughput_ips"] > 0
    assert result["network_size"] == [64, 64]
    assert result["optimized"] is True and result["compiled"] is False
    assert result["threads"] == 1 and result["device"] == "cpu" and result["batch"] == 2
    json.dumps(result)  # serialisable as it is
    assert "latency median" in format_report(result)


def test_forced_detections_come_out_and_the_model_is_restored(result_and_model):
    result, model = result_and_model
    assert result["detections"] == 20 and result["forced_detections"] == 20
    assert model.score_threshold == 1.0  # the property reads the box head's threshold
    assert model.roi_heads.detections_per_image == 100


def test_natural_threshold_keeps_the_model_threshold():
    model = tiny_model().train()  # no score exceeds the threshold 1: nothing is detected
    result = benchmark(model, detections=None, optimize=False, **FAST)
    assert result["detections"] == 0 and result["forced_detections"] is None
    assert result["optimized"] is False
    assert model.training  # timed in eval mode, then restored


def test_score_threshold_property_delegates_to_the_box_head():
    model = tiny_model()
    model.score_threshold = 0.3
    assert model.roi_heads.score_threshold == 0.3 and model.score_threshold == 0.3


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        result = benchmark(tiny_model(), compile=True, **FAST)
    assert result["compiled"] is False and result["detections"] > 0


def test_compile_failure_at_the_batch_size_also_falls_back(monkeypatch):
    def compile_for_one_image(infer, **kwargs):
        def compiled(batch):
            if batch.tensors[0].shape[0] > 1:  # the recompile for the batch fails
                raise RuntimeError("unsupported op at batch 2")
            return infer(batch)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_for_one_image)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*unsupported op at batch 2"):
        result = benchmark(tiny_model(), compile=True, **{**FAST, "batch": 2})
    assert result["compiled"] is False and result["throughput_ips"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runs": 0}, "runs must be an int >= 1"),
        ({"imgsz": 64.0}, "imgsz must be an int"),
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"detections": 0}, "detections must be a positive int or None"),
        ({"device": "gpu"}, "device must be like"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        benchmark(tiny_model(), **{**FAST, **kwargs})


def test_a_module_without_inference_stages_is_refused():
    with pytest.raises(TypeError, match="no preprocess, infer, postprocess"):
        benchmark(torch.nn.Conv2d(3, 3, 1), **FAST)


def test_percentile_interpolates_between_ranks():
    assert _percentile([10.0, 20.0, 30.0, 40.0, 50.0], 0.9) == pytest.approx(46.0)
    assert _percentile([7.0], 0.9) == 7.0


def test_cli_bench_with_weights_writes_json(tmp_path, capsys):
    model = tiny_model()
    options = {key: list(v) if isinstance(v, tuple) else v for key, v in TINY.items()}
    weights = save_weights(
        tmp_path / "tiny.safetensors",
        model,
        {"model": "mask_rcnn_r18_fpn", "classes": ["a", "b", "c"], "model_kwargs": options},
    )
    out = tmp_path / "bench.json"
    argv = ["bench", "--weights", str(weights), "--imgsz", "64", "--threads", "1"]
    argv += ["--runs", "2", "--warmup", "1", "--batch", "2", "--json", str(out)]
    argv += ["--detections", "7"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "postprocess" in printed and f"wrote {out}" in printed
    result = json.loads(out.read_text())
    assert result["model"] == str(weights)
    assert set(result["latency_ms"]) == {"median", "p90", "preprocess", "network", "postprocess"}
    assert 0 < result["detections"] <= 7 and result["forced_detections"] == 7
    assert result["params"] == sum(p.numel() for p in model.parameters())


def test_cli_bench_rejects_bad_input(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--model", "mask_rcnn_r81_fpn"])
    assert "did you mean 'mask_rcnn_r18_fpn'" in capsys.readouterr().err
    assert main(["bench", "--model", "mask_rcnn_r18_fpn", "--threads", "0"]) == 2
    assert "threads must be an int >= 1" in capsys.readouterr().err
