"""SAM training pieces: prompt sampling from masks, the focal/dice/IoU loss, freeze keys, a tiny run
(Segment Anything, arXiv:2304.02643)."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch

import zoo.nn  # noqa: F401
from zoo.commands.train import add_arguments
from zoo.engine.losses.sam import SamLoss, dice_loss_per_mask, focal_loss_per_mask
from zoo.engine.train_options import freeze
from zoo.engine.tasks.sam import SamTask, box_from_mask, image_embedding, interior_point
from zoo.engine.trainer import Trainer
from zoo.model import Model

from tiny_cfgs import TINY_SAM


@pytest.fixture()
def tiny_sam(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-sam.yaml"
    path.write_text(TINY_SAM)
    return path


def _args(cfg: Path, project: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--plugin", action="append", default=[])
    return parser.parse_args([str(cfg), "--data", "shapes:n_train=4,n_val=2,max_objects=3", "--imgsz", "64",
                              "--batch", "2", "--workers", "0", "--device", "cpu", "--project", str(project),
                              "--no-progress", *extra])


def _masks() -> torch.Tensor:
    m = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    m[0, 0, 10:30, 20:50] = True
    m[1, 0, 40:60, 5:15] = True
    return m


def test_mask_geometry_helpers() -> None:
    m = _masks()[0, 0]
    assert box_from_mask(m).tolist() == [20.0, 10.0, 50.0, 30.0]
    x, y = interior_point(m).tolist()
    assert m[int(y), int(x)]
    assert box_from_mask(torch.zeros(8, 8, dtype=torch.bool)).tolist() == [0, 0, 0, 0]


def test_sampled_prompts_follow_the_masks(tiny_sam: Path) -> None:
    torch.manual_seed(0)
    task = SamTask(argparse.Namespace(), Model(str(tiny_sam)))
    targets = _masks()
    boxes = task.sample_prompts(targets, "box")
    assert boxes["boxes"].shape == (2, 1, 4) and boxes["multimask_output"] is False
    tight = torch.stack([box_from_mask(m) for m in targets.flatten(0, 1)]).view(2, 1, 4)
    side = (tight[..., 2:] - tight[..., :2]).repeat(1, 1, 2)
    assert ((boxes["boxes"] - tight).abs() <= 0.2 * side + 1e-4).all()  # jitter is bounded
    for _ in range(5):
        pts = task.sample_prompts(targets, "points")
        assert pts["points"].shape == (2, 1, task.max_points, 2) and pts["multimask_output"] is False
        for b in range(2):
            for (x, y), label in zip(pts["points"][b, 0].long().tolist(), pts["labels"][b, 0].tolist()):
                if label == 1:
                    assert targets[b, 0, y, x]
                elif label == 0:
                    assert not targets[b, 0, y, x]
            assert (pts["labels"][b, 0] == 1).any()
    single = task.sample_prompts(targets, "point")
    assert single["multimask_output"] is True and (single["labels"][..., 0] == 1).all()


def test_correction_point_comes_from_the_error_region(tiny_sam: Path) -> None:
    torch.manual_seed(0)
    model = Model(str(tiny_sam)).eval()
    task = SamTask(argparse.Namespace(), model)
    targets = _masks()
    prompts = task.sample_prompts(targets, "box")
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = task.add_correction(model, img, targets, prompts)
    assert out["points"].shape == (2, 1, 1, 2) and out["mask_inputs"].shape == (2, 1, 1, 16, 16)
    masks, iou = model(img, **out)
    assert masks.shape == (2, 1, 1, 16, 16) and iou.shape == (2, 1, 1)


def test_loss_prefers_the_matching_candidate() -> None:
    target = _masks()[:, :, ::1].float()  # (B=2, N=1, 64, 64)
    good = (target * 20 - 10)[:, :, None].repeat(1, 1, 3, 1, 1)
    good[:, :, 0] = -10.0  # candidate 0 is empty, 1 and 2 match
    low = torch.nn.functional.interpolate(good.flatten(0, 1), size=(16, 16), mode="area").view(2, 1, 3, 16, 16)
    batch = {"sam_targets": target.bool(), "sam_valid": torch.ones(2, 1, dtype=torch.bool)}
    loss_fn = SamLoss()
    loss, items = loss_fn((low, torch.ones(2, 1, 3)), batch)
    assert items["dice"] < 0.15 and items["focal"] < 0.1
    worst, _ = loss_fn((low[:, :, :1].repeat(1, 1, 3, 1, 1), torch.ones(2, 1, 3)), batch)
    assert float(loss) < float(worst)
    # IoU head: predicting the true IoU (about 0 for the empty candidate) beats predicting 1 everywhere
    _, exact = loss_fn((low, torch.tensor([0.0, 1.0, 1.0]).expand(2, 1, 3)), batch)
    assert exact["iou"] < items["iou"]
    # invalid (padding) prompt sets do not count
    _, masked = loss_fn((low[:, :, :1].repeat(1, 1, 3, 1, 1), torch.ones(2, 1, 3)),
                        {**batch, "sam_valid": torch.zeros(2, 1, dtype=torch.bool)})
    assert masked["focal"] == 0.0


def test_focal_and_dice_values() -> None:
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(dice_loss_per_mask(torch.full((2, 2), 50.0), t)) == pytest.approx(1 - 5 / 7, abs=1e-4)
    assert float(focal_loss_per_mask(t * 40 - 20, t)) < 1e-6


def test_image_encoder_key_freezes_every_row_before_the_head(tiny_sam: Path) -> None:
    model = Model(str(tiny_sam))
    task = SamTask(argparse.Namespace(), model)
    prefixes = task.parameter_prefixes(model, "image_encoder")
    assert prefixes == [f"model.{i}." for i in range(5)]
    n = freeze(model, prefixes)
    assert n > 0
    assert all(not p.requires_grad for k, p in model.named_parameters() if not k.startswith("model.5."))
    assert all(p.requires_grad for k, p in model.named_parameters() if k.startswith("model.5."))
    assert task.parameter_prefixes(model, "mask_decoder") == ["model.5.mask_decoder."]
    assert task.parameter_prefixes(model, "0-1") == ["model.0.", "model.1."]


def test_tiny_training_run_reports_miou_per_prompt_type(tiny_sam: Path, tmp_path: Path) -> None:
    # every prompt type (on CPU the default mix is box prompts only)
    args = _args(tiny_sam, tmp_path, "--epochs", "1", "--freeze", "image_encoder", "--lr-scale", "mask_decoder=0.5",
                 "--sam-prompt-mix", "0.5,0.25,0.25")
    args.sam_correction = 1.0  # exercise the correction-point pass
    trainer = Trainer(args)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.train()
    assert result.status == "done"
    assert {g["lr_scale"] for g in trainer.optimizer.param_groups} == {0.5, 1.0}
    rows = list(csv.DictReader(open(result.save_dir / "results.csv")))
    for key in ("mIoU/box", "mIoU/point", "mIoU/points", "train/focal", "train/dice", "train/iou"):
        assert key in rows[0], key
        assert 0.0 <= float(rows[0][key]) < 1e3
    assert (result.save_dir / "val_predictions.jpg").is_file()
    state = trainer.model.state_dict()
    assert torch.equal(state["model.0.conv.weight"], before["model.0.conv.weight"])  # frozen
    token = "model.5.mask_decoder.iou_token.weight"
    assert not torch.equal(state[token], before[token])
    emb = image_embedding(trainer.model, torch.rand(1, 3, 64, 64))
    assert emb.shape == (1, 32, 4, 4)


def test_prompt_mix_flag_sets_the_sampling_weights():
    import pytest

    from zoo import ConfigError
    from zoo.engine.tasks.sam import _prompt_mix

    assert _prompt_mix("1,0,0").tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="--sam-prompt-mix"):
        _prompt_mix("1,-1,0")
