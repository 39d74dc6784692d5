"""Rewinding restores exact tensors and the exact schedule position."""

import pytest
import timm
import torch
from accelerate import Accelerator

from prac_plugin import MaskEnforcer, TicketMask
from prac_plugin.config.schema import from_dict
from prac_plugin.data.sources import BatchSource, load_data, resolve_normalization
from prac_plugin.engine.schedule import lr_factor
from prac_plugin.engine.trainer import LevelSchedule, Trainer, create_optimizer
from prac_plugin.rundir.files import state_to_cpu
from prac_plugin.config.recipes import DataSection, TrainSection


@pytest.fixture(scope="module")
def digits():
    cfg = from_dict(DataSection, {"path": "builtin:digits"}, "data")
    return cfg, load_data(cfg)


def make_trainer(digits, **train):
    cfg, bundle = digits
    train_cfg = from_dict(TrainSection, {"batch_size": 64, "lr": 0.05, **train}, "train")
    torch.manual_seed(0)
    model = timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=8)
    mean, std, _ = resolve_normalization(cfg, bundle, model)
    accelerator = Accelerator(cpu=True)
    source = BatchSource(bundle.train, bundle, cfg, mean, std, accelerator.device)
    trainer = Trainer(accelerator, train_cfg, {"train": source})
    return trainer, model, train_cfg


def test_rewind_snapshot_equals_weights_after_exactly_k_steps(digits):
    trainer, model, cfg = make_trainer(digits)
    positions = torch.arange(len(digits[1].train))
    schedule = LevelSchedule.for_examples(len(positions), cfg.batch_size, 3)
    captured = {}
    enforcer = MaskEnforcer(model, TicketMask.dense(model))
    trainer.train(model, create_optimizer(model, cfg), enforcer, positions, schedule,
                  step_callbacks={25: lambda m, o: captured.update(state_to_cpu(m))})
    # an identical run stopped at step 25 (constant schedule: same rates, same data order)
    trainer2, model2, _ = make_trainer(digits)
    short = LevelSchedule(schedule.steps_per_epoch, 25, 3 * 25 / schedule.total_steps)
    result = trainer2.train(model2, create_optimizer(model2, cfg), MaskEnforcer(model2, TicketMask.dense(model2)), positions, short)
    assert result.steps == 25
    for name, tensor in state_to_cpu(model2).items():
        assert torch.equal(captured[name], tensor), name


def test_training_resumed_at_step_k_uses_the_rate_and_data_of_step_k(digits):
    trainer, model, cfg = make_trainer(digits, schedule="step", milestones=[2], gamma=0.1)
    positions = torch.arange(len(digits[1].train))
    schedule = LevelSchedule.for_examples(len(positions), cfg.batch_size, 3)  # 21 steps per epoch
    seen = []
    optimizer = create_optimizer(model, cfg)
    start = schedule.steps_per_epoch * 2 - 1  # one step before the milestone
    trainer.train(model, optimizer, MaskEnforcer(model, TicketMask.dense(model)), positions, schedule, start_step=start,
                  observer=lambda logits, y, idx: seen.append((optimizer.param_groups[0]["lr"], idx.clone())))
    assert len(seen) == schedule.total_steps - start
    assert seen[0][0] == pytest.approx(0.05) and seen[1][0] == pytest.approx(0.005)
    assert [lr for lr, _ in seen] == pytest.approx([0.05 * lr_factor(s, schedule.total_steps, schedule.steps_per_epoch, "step", [2]) for s in range(start, schedule.total_steps)])
    # the batch at step k is the one an uninterrupted run would have seen at step k
    full = []
    trainer2, model2, _ = make_trainer(digits, schedule="step", milestones=[2], gamma=0.1)
    trainer2.train(model2, create_optimizer(model2, cfg), MaskEnforcer(model2, TicketMask.dense(model2)), positions, schedule,
                   observer=lambda logits, y, idx: full.append(idx.clone()))
    assert torch.equal(full[start], seen[0][1]) and torch.equal(full[start + 1], seen[1][1])


@pytest.mark.parametrize(
    "budget, total, milestone_step",
    [("linear", 25 * 4, 50), ("quadratic", round(25 * 4 * 0.25), 12.5), ("none", 100 * 4, 200)],
)
def test_budget_scaling_of_a_quarter_of_the_data(budget, total, milestone_step):
    """A level on |P| = |D|/4 examples: steps scale by 1/4 (linear), 1/16 (quadratic) or not at all."""
    schedule = LevelSchedule.for_examples(800, 32, 4, full_examples=3200, budget=budget)
    assert schedule.steps_per_epoch == 25 and schedule.total_steps == total
    # a milestone at epoch 2 of 4 falls at half of the level, whatever its length
    assert schedule.schedule_epoch_steps * 2 == pytest.approx(milestone_step * (total / total))
    assert lr_factor(int(schedule.schedule_epoch_steps * 2) - 1, total, schedule.schedule_epoch_steps, "step", [2]) == 1.0
    assert lr_factor(int(-(-schedule.schedule_epoch_steps * 2 // 1)), total, schedule.schedule_epoch_steps, "step", [2]) == pytest.approx(0.1)
    full = LevelSchedule.for_examples(3200, 32, 4, full_examples=3200, budget=budget)
    assert (full.total_steps, full.schedule_epoch_steps) == (400, 100)  # full data: every budget is the plain schedule


def test_epoch_hook_stops_a_level_early(digits):
    trainer, model, cfg = make_trainer(digits)
    positions = torch.arange(len(digits[1].train))
    schedule = LevelSchedule.for_examples(len(positions), cfg.batch_size, 5)
    calls = []
    result = trainer.train(model, create_optimizer(model, cfg), MaskEnforcer(model, TicketMask.dense(model)), positions, schedule,
                           epoch_end=lambda epoch, m: calls.append(epoch) or epoch == 2)
    assert calls == [1, 2] and result.steps == 2 * schedule.steps_per_epoch and result.history[-1]["stopped_early"]
