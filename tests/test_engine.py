"""The training engine: optimizer and schedule, EMA, checkpoints, the Trainer and its resume."""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instaseg.data.config import load_data_config
from instaseg.data.dataset import InstanceDataset
from instaseg.data.loader import build_loader
from instaseg.data.synth import generate_synthetic
from instaseg.data.transforms import train_transforms
from instaseg.engine import (
    LRSchedule,
    ModelEMA,
    Trainer,
    TrainingDivergedError,
    build_optimizer,
    load_training_state,
    load_weights,
    parameter_groups,
    read_metrics,
    save_weights,
    validate,
)
from instaseg.engine.metrics_log import MetricsLog
from instaseg.engine.rng import capture_rng_state, restore_rng_state
from instaseg.ops.boxes import masks_to_boxes
from instaseg.structures import Instances

IMAGE_SIZE = 64
BATCH_SIZE = 2
NUM_TRAIN = 8
STEPS_PER_EPOCH = NUM_TRAIN // BATCH_SIZE


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a run."""


class PixelSegmenter(nn.Module):
    """A tiny model that follows the instaseg contract: per-pixel foreground and class logits;
    its instances are the connected components of the foreground.

    fail_at_step: the training forward call (1-based) at which to return a NaN loss_mask
    (failure="nan") or raise Interrupted (failure="interrupt").
    """

    def __init__(self, num_classes: int, *, fail_at_step: int | None = None, failure: str = "nan"):
        super().__init__()
        width = 16
        self.body = nn.Sequential(  # dilations give a 15-pixel receptive field
            nn.Conv2d(3, width, 3, padding=1),
            nn.GroupNorm(4, width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(width, 1 + num_classes, 1)
        self.fail_at_step, self.failure, self.calls = fail_at_step, failure, 0

    def forward(self, images: list[Tensor], targets: list[Instances] | None = None):
        if not self.training:
            return self.predict(images)
        if targets is None:
            raise ValueError("training needs targets")
        return self.compute_losses(images, targets)

    def logits(self, image: Tensor) -> Tensor:
        """uint8 [3, H, W] -> [1 + K, H, W]: foreground logit, then class logits."""
        return self.head(self.body(image[None].float() / 255 - 0.5))[0]

    def compute_losses(self, images: list[Tensor], targets: list[Instances]) -> dict[str, Tensor]:
        self.calls += 1
        if self.calls == self.fail_at_step and self.failure == "interrupt":
            raise Interrupted(f"interrupted at step {self.calls}")
        mask_loss, class_loss = 0.0, 0.0
        for image, target in zip(images, targets, strict=True):
            logits = self.logits(image)
            masks = target.masks & ~target.iscrowd[:, None, None]
            foreground = masks.any(0)
            # a random half of the pixels, as detectors sample proposals: uses the global RNG
            sampled = torch.rand(foreground.shape) < 0.5
            targets_sampled = foreground[sampled].float()
            positives = targets_sampled.sum().clamp(min=1)
            balance = ((len(targets_sampled) - positives) / positives).clamp(max=10)
            mask_loss = mask_loss + F.binary_cross_entropy_with_logits(
                logits[0][sampled], targets_sampled, pos_weight=balance
            )
            label_map = torch.zeros(foreground.shape, dtype=torch.long)
            for mask, label in zip(masks, target.labels, strict=True):
                label_map[mask] = label
            class_logits = logits[1:, foreground].T  # [P, K]
            class_loss = class_loss + (
                F.cross_entropy(class_logits, label_map[foreground])
                if len(class_logits)
                else logits[1:].sum() * 0
            )
        losses = {"loss_mask": mask_loss / len(images), "loss_cls": class_loss / len(images)}
        if self.calls == self.fail_at_step and self.failure == "nan":
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    def predict(self, images: list[Tensor]) -> list[Instances]:
        results = []
        for image in images:
            logits = self.logits(image).float()
            foreground = logits[0].sigmoid()
            components, count = scipy.ndimage.label((foreground > 0.5).numpy())
            masks = torch.from_numpy(components[None] == np.arange(1, count + 1)[:, None, None])
            masks = masks[masks.sum((1, 2)) >= 4]
            areas = masks.sum((1, 2)).clamp(min=1)
            class_probs = (logits[1:].softmax(0)[:, None] * masks).sum((2, 3)) / areas  # [K, N]
            scores, labels = class_probs.max(0) if len(masks) else (torch.zeros(0),) * 2
            objectness = (foreground[None] * masks).sum((1, 2)) / areas
            results.append(
                Instances(
                    image_size=tuple(image.shape[1:]),
                    boxes=masks_to_boxes(masks),
                    labels=labels.long(),
                    scores=(scores * objectness).float(),
                    masks=masks,
                )
            )
        return results


@dataclass
class Data:
    train: InstanceDataset
    val: InstanceDataset

    def train_loader(self):
        transformed = self.train.with_transforms(train_transforms(IMAGE_SIZE))
        return build_loader(transformed, batch_size=BATCH_SIZE, shuffle=True, num_workers=0, seed=0)

    def val_loader(self):
        return build_loader(self.val, batch_size=2, shuffle=False, num_workers=0, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    root = tmp_path_factory.mktemp("engine") / "shapes"
    yaml_path = generate_synthetic(
        root, num_train=NUM_TRAIN, num_val=4, seed=0, image_size=(IMAGE_SIZE, IMAGE_SIZE)
    )
    config = load_data_config(yaml_path)
    return Data(config.dataset("train"), config.dataset("val"))


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """These tiny convolutions are fastest on one thread, and stay fast on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


METADATA = {"model": "pixel_segmenter", "image_size": IMAGE_SIZE}


def make_trainer(
    data: Data, out_dir: Path, *, fail_at_step: int | None = None, failure: str = "nan", **options
):
    """A trainer with fixed seeds; `options` override the Trainer arguments below."""
    torch.manual_seed(0)
    num_classes = len(data.train.class_names)
    model = PixelSegmenter(num_classes, fail_at_step=fail_at_step, failure=failure)
    optimizer = build_optimizer(model, "adamw", lr=0.02, weight_decay=1e-4)
    schedule = LRSchedule(optimizer, "cosine", warmup_steps=2)
    arguments = {
        "epochs": 3,
        "val_loader": data.val_loader(),
        "class_names": data.train.class_names,
        "category_ids": data.train.category_ids,
        "metadata": {**METADATA, "model_kwargs": {"num_classes": num_classes}},
        "log_every": 1,
        "progress_bar": False,
        **options,
    }
    return Trainer(
        model, data.train_loader(), optimizer, schedule=schedule, out_dir=out_dir, **arguments
    )


def parameters_of(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


# ---------------------------------------------------------------- a full run


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run") / "out"
    trainer = make_trainer(data, out_dir, epochs=6, ema_decay=0.9)
    return trainer, trainer.fit(), out_dir


def test_loss_decreases(trained):
    _, _, out_dir = trained
    epochs = [r for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    losses = [record["train"]["total_loss"] for record in epochs]
    assert [record["epoch"] for record in epochs] == [1, 2, 3, 4, 5, 6]
    assert losses[-1] < 0.9 * losses[0]


def test_run_writes_its_files(trained):
    trainer, summary, out_dir = trained
    for name in ("metrics.jsonl", "curves.png", "best.safetensors", "best.json"):
        assert (out_dir / name).is_file(), name
    for name in ("last.safetensors", "last.json", "last.state.pt"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
    records = read_metrics(out_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 6 * STEPS_PER_EPOCH + 1))
    assert {"loss_mask", "loss_cls", "total_loss", "lr", "step_time_s"} <= set(train[0])
    validated = [r for r in records if r["kind"] == "epoch"]
    assert all("AP" in r["val"]["segm"] and "AP" in r["val"]["bbox"] for r in validated)
    assert summary["stopped_by"] == "epochs"
    assert (summary["epochs"], summary["steps"], summary["progress"]) == (6, 24, 1.0)
    assert summary["train_images"] == 6 * NUM_TRAIN and summary["train_images_per_s"] > 0
    assert summary["final_metrics"] == validated[-1]["val"]
    assert summary["best_metric"] == max(r["val"]["segm"]["AP"] for r in validated)


def test_metadata_round_trips(trained, data):
    trainer, summary, out_dir = trained
    state, metadata = load_weights(out_dir / "best")
    assert metadata["classes"] == data.train.class_names
    assert metadata["category_ids"] == data.train.category_ids
    assert metadata["model"] == "pixel_segmenter"
    assert metadata["model_kwargs"] == {"num_classes": len(data.train.class_names)}
    assert metadata["image_size"] == 64
    assert metadata["epoch"] == summary["best_epoch"]
    assert metadata["metrics"]["segm"]["AP"] == summary["best_metric"]
    assert metadata["ema"] is True
    assert metadata["versions"]["torch"] == torch.__version__
    assert json.loads((out_dir / "best.json").read_text()) == metadata
    last_state, last_metadata = load_weights(out_dir / "last.safetensors")
    assert last_metadata["epoch"] == 6
    model = PixelSegmenter(**metadata["model_kwargs"])
    model.load_state_dict(last_state)  # strict
    for name, tensor in trainer.ema.module.state_dict().items():
        assert torch.equal(last_state[name], tensor), name  # saved weights are the EMA's


def test_validate_reuses_the_loader_contract(trained, data):
    trainer, summary, _ = trained
    result = validate(
        trainer.ema.module,
        data.val_loader(),
        class_names=data.train.class_names,
        category_ids=data.train.category_ids,
    )
    assert result.metrics == summary["final_metrics"]


def test_fresh_fit_refuses_an_out_dir_holding_a_run(trained, data):
    _, _, out_dir = trained
    with pytest.raises(FileExistsError, match="resume it or choose another out_dir"):
        make_trainer(data, out_dir, epochs=1).fit()


# ---------------------------------------------------------------- resume


def test_resume_is_exact(data, tmp_path, deterministic):
    uninterrupted = make_trainer(data, tmp_path / "whole", ema_decay=0.9)
    uninterrupted.fit()

    interrupted = make_trainer(
        data,
        tmp_path / "cut",
        ema_decay=0.9,
        fail_at_step=2 * STEPS_PER_EPOCH + 1,  # the first step of epoch 3
        failure="interrupt",
    )
    with pytest.raises(Interrupted):
        interrupted.fit()
    assert load_training_state(tmp_path / "cut" / "last")["counters"]["epoch"] == 2

    torch.manual_seed(123)  # the resumed run must not depend on the RNG it starts with
    random.random()
    resumed = make_trainer(
        data, tmp_path / "cut", ema_decay=0.9, resume_from=tmp_path / "cut" / "last.state.pt"
    )
    summary = resumed.fit()

    assert summary["epochs"] == 3 and summary["steps"] == 3 * STEPS_PER_EPOCH
    for name, tensor in parameters_of(uninterrupted.model).items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    for name, tensor in parameters_of(uninterrupted.ema.module).items():
        assert torch.equal(resumed.ema.module.state_dict()[name], tensor), name

    def train_losses(out_dir: Path) -> list[tuple[int, float]]:
        records = read_metrics(out_dir / "metrics.jsonl")
        return [(r["step"], r["total_loss"]) for r in records if r["kind"] == "train"]

    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "whole")


def test_resume_needs_the_same_ema_setting(trained, data, tmp_path):
    _, _, out_dir = trained
    with pytest.raises(ValueError, match="with EMA; pass the same ema_decay"):
        make_trainer(data, tmp_path / "x", resume_from=out_dir / "last")


def test_resuming_a_finished_run_trains_nothing(trained, data, tmp_path):
    _, summary, out_dir = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in out_dir.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    trainer = make_trainer(data, copy, epochs=6, ema_decay=0.9, resume_from=copy / "last")
    again = trainer.fit()
    assert (again["epochs"], again["steps"]) == (summary["epochs"], summary["steps"])
    assert again["train_images_per_s"] is None


# ---------------------------------------------------------------- divergence


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    trainer = make_trainer(data, tmp_path, fail_at_step=STEPS_PER_EPOCH + 1)  # epoch 2, step 1
    with pytest.raises(TrainingDivergedError) as error:
        trainer.fit()
    message = str(error.value)
    assert f"at step {STEPS_PER_EPOCH + 1} (epoch 2)" in message
    assert "loss_mask=nan" in message and "loss_cls" not in message
    state, metadata = load_weights(tmp_path / "last")
    assert metadata["epoch"] == 1
    assert all(torch.isfinite(tensor).all() for tensor in state.values())
    assert load_training_state(tmp_path / "last")["counters"]["global_step"] == STEPS_PER_EPOCH
    assert (tmp_path / "curves.png").is_file()


def test_non_finite_weights_are_never_saved(tmp_path):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite values .* in weight; not saved"):
        save_weights(tmp_path / "w", model, {})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- time budget


def test_time_budget_stops_after_the_step_that_spends_it(data, tmp_path, monkeypatch):
    ticks = itertools.count()  # a clock advancing one second per reading
    monkeypatch.setattr("instaseg.engine.trainer.perf_counter", lambda: float(next(ticks)))
    trainer = make_trainer(data, tmp_path, epochs=None, time_budget_s=5.5)
    summary = trainer.fit()
    # epoch 1: four steps ending at 1, 2, 3, 4 s; epoch 2 (its clock restarts after the
    # validation): 5 s, then 6 s >= 5.5 s, so training stops after step 6
    assert summary["stopped_by"] == "time_budget"
    assert (summary["steps"], summary["epochs"], summary["elapsed_s"]) == (6, 2, 6.0)
    assert summary["progress"] == pytest.approx(6 / 5.5)
    lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    warmup = [0.001, 0.001 + 0.999 / 2, 1, 1, 1, 1]  # warmup_steps=2, warmup_factor=0.001
    cosine = [0.01 + 0.99 * (1 + math.cos(math.pi * elapsed / 5.5)) / 2 for elapsed in range(6)]
    assert lrs == pytest.approx([0.02 * w * c for w, c in zip(warmup, cosine, strict=True)])
    assert trainer.schedule.factor(summary["progress"], 6) == pytest.approx(0.01)  # the end
    assert load_weights(tmp_path / "last")[1]["epoch"] == 2


def test_tiny_time_budget_takes_one_step(data, tmp_path):
    summary = make_trainer(data, tmp_path, epochs=None, time_budget_s=1e-9, val_loader=None).fit()
    assert (summary["steps"], summary["epochs"]) == (1, 1)
    assert summary["progress"] >= 1 and summary["best_path"] is None
    assert (tmp_path / "last.safetensors").is_file()


# ---------------------------------------------------------------- precision


def test_bf16_autocast_on_cpu_trains(data, tmp_path):
    summary = make_trainer(
        data, tmp_path, epochs=1, amp="bf16", grad_clip=1.0, val_loader=None
    ).fit()
    assert summary["steps"] == STEPS_PER_EPOCH
    state, _ = load_weights(tmp_path / "last")
    assert all(tensor.dtype == torch.float32 for tensor in state.values())


def test_fp16_needs_cuda(data, tmp_path):
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        make_trainer(data, tmp_path, amp="fp16")


def test_trainer_argument_errors(data, tmp_path):
    with pytest.raises(ValueError, match="exactly one of epochs and time_budget_s"):
        make_trainer(data, tmp_path, epochs=2, time_budget_s=10.0)
    with pytest.raises(ValueError, match=r"metadata must not set \['epoch'\]"):
        make_trainer(data, tmp_path, metadata={"epoch": 3})
    with pytest.raises(TypeError, match=r"metadata\['size'\] is not json-serialisable"):
        make_trainer(data, tmp_path, metadata={"size": torch.tensor(3)})


# ---------------------------------------------------------------- optimizer and schedule


def test_lr_schedule_by_hand():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    cosine = LRSchedule(optimizer, "cosine", warmup_steps=10, warmup_factor=0.1, final_factor=0.0)
    assert cosine.factor(0.0, 0) == pytest.approx(0.1)
    assert cosine.factor(0.0, 5) == pytest.approx(0.55)  # halfway up the warmup
    assert cosine.factor(0.5, 10) == pytest.approx(0.5)
    assert cosine.factor(1.0, 100) == pytest.approx(0.0)
    assert cosine.factor(2.0, 100) == pytest.approx(0.0)  # progress past the end is clamped
    assert cosine.update(0.25, 20) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 + math.sqrt(0.5)) / 2)

    step = LRSchedule(optimizer, "step", milestones=(0.5, 0.75))
    assert [step.factor(p, 0) for p in (0.0, 0.49, 0.5, 0.74, 0.75, 1.0)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    with pytest.raises(ValueError, match="milestones must be increasing fractions"):
        LRSchedule(optimizer, "step", milestones=(0.8, 0.5))
    with pytest.raises(ValueError, match="schedule kind must be one of"):
        LRSchedule(optimizer, "linear")


def test_lr_schedule_state_round_trip():
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in (0.1, 0.02)]
    optimizer = torch.optim.SGD(groups, lr=0.1)
    schedule = LRSchedule(optimizer, "cosine", warmup_steps=5)
    schedule.update(0.3, 7)
    restored = LRSchedule(torch.optim.SGD(groups, lr=0.5), "cosine", warmup_steps=5)
    restored.load_state_dict(schedule.state_dict())
    assert (restored.base_lrs, restored.last_progress, restored.last_step) == ([0.1, 0.02], 0.3, 7)
    with pytest.raises(ValueError, match="schedule warmup_steps is 0 but the saved schedule"):
        LRSchedule(optimizer, "cosine").load_state_dict(schedule.state_dict())


def test_no_weight_decay_on_norms_and_biases():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.GroupNorm(2, 4),
        nn.LayerNorm(4),
        shared,
        shared,  # a shared module's parameters appear once
        nn.Linear(4, 2, bias=False),
    )
    model[6].weight.requires_grad_(False)
    decayed, plain = parameter_groups(model, 0.05)
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(shared.weight)}
    no_decay = [model[0].bias, shared.bias] + [p for i in (1, 2, 3) for p in model[i].parameters()]
    assert {id(p) for p in plain["params"]} == {id(p) for p in no_decay}
    assert len(plain["params"]) == len(no_decay)

    adamw = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.9)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    sgd = build_optimizer(model, lr=0.1, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    with pytest.raises(ValueError, match="optimizer name must be one of"):
        build_optimizer(model, "adam", lr=0.1)


# ---------------------------------------------------------------- EMA


def test_ema_by_hand():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, ramp_updates=0)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    assert ema.module[0].weight.item() == pytest.approx(0.5)
    assert ema.module[1].num_batches_tracked.item() == 7  # integer buffers are copied
    ema.update(model)
    assert ema.module[0].weight.item() == pytest.approx(0.75)
    assert not ema.module.training and not ema.module[0].weight.requires_grad

    ramped = ModelEMA(model, decay=0.9, ramp_updates=2.0)
    assert ramped.current_decay() == pytest.approx(0.9 * (1 - math.exp(-0.5)))
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    ramped.update(model)  # d = 0.9 * (1 - e^-0.5) at update 1
    d = 0.9 * (1 - math.exp(-0.5))
    assert ramped.module[0].weight.item() == pytest.approx(d * 1.0 + (1 - d) * 3.0)

    restored = ModelEMA(nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1)))
    restored.load_state_dict(ramped.state_dict())
    assert restored.updates == 1 and restored.decay == 0.9
    assert restored.module[0].weight.item() == ramped.module[0].weight.item()


# ---------------------------------------------------------------- checkpoints


def test_tied_weights_round_trip(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    model[1].weight = model[0].weight  # tied, as in a language model's head
    path = save_weights(tmp_path / "tied.v2", model, {"model": "tied"})
    assert path == tmp_path / "tied.v2.safetensors"
    state, metadata = load_weights(path)
    assert set(state) == set(model.state_dict())
    assert torch.equal(state["1.weight"], model[0].weight)
    assert metadata["model"] == "tied" and metadata["format_version"] == 1


def test_metadata_is_in_the_safetensors_header(tmp_path):
    save_weights(tmp_path / "w", nn.Linear(2, 1), {"classes": ["a"]})
    (tmp_path / "w.json").unlink()
    assert load_weights(tmp_path / "w")[1]["classes"] == ["a"]


def test_load_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_weights(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    save_weights(corrupt, nn.Linear(2, 1), {})
    corrupt.write_bytes(corrupt.read_bytes()[:-3])
    with pytest.raises(ValueError, match=f"{corrupt}: not a readable safetensors file"):
        load_weights(corrupt)
    garbage = tmp_path / "garbage.state.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{garbage}: not a readable training state"):
        load_training_state(garbage)
    with pytest.raises(FileNotFoundError, match="none.state.pt"):
        load_training_state(tmp_path / "none")


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_tensorboard_missing_is_a_warning(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(RuntimeWarning, match="TensorBoard logging is off"):
            log = MetricsLog(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    else:
        log = MetricsLog(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb")
    log.start()
    log.append({"kind": "train", "epoch": 0, "step": 1, "total_loss": 1.0})
    log.append({"kind": "train", "epoch": 0, "step": 2, "total_loss": 0.5})
    log.rewind(1)
    log.close()
    assert read_metrics(tmp_path / "m.jsonl") == [
        {"kind": "train", "epoch": 0, "step": 1, "total_loss": 1.0}
    ]
