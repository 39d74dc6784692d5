"""The captured training step (train.cuda_graphs): the same results as the eager loop, the schedule still moving,
the state a warm-up touches restored, and the decision to capture or not with its reasons.

The CPU tests run the function a CUDA graph captures without capturing it (``step_mode="uncaptured"``: static
buffers, tensor learning rate, zero momentum buffers, warm-up and restore all as on the GPU). The tests at the end
need CUDA and are skipped without it; the first GPU run exercises them.
"""

import copy

import pytest
import torch
import yaml
from accelerate import Accelerator
from torch import nn

from prac_plugin import MaskEnforcer, PracError, TicketMask
from prac_plugin.config.schema import from_dict
from prac_plugin.compat import accelerate_private
from prac_plugin.engine.captured import CapturedStep, GraphDecision, StepState, capturable, decide, is_capturable, require
from prac_plugin.data.sources import BatchSource, load_data, resolve_normalization
from prac_plugin.engine.schedule import lr_factor
from prac_plugin.engine.trainer import LevelSchedule, Trainer, create_optimizer
from prac_plugin.config.recipes import DataSection, TrainSection, parse_recipe
from prac_plugin.strategies.prac.forgetting import ForgettingTracker

from conftest import quick_recipe

CUDA = torch.cuda.is_available()


class SmallConvNet(nn.Module):
    """Two conv + BatchNorm blocks and a classifier: BN buffers, two optimizer groups (decayed and not)."""

    def __init__(self, in_chans: int = 1, classes: int = 10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_chans, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def digits():
    cfg = from_dict(DataSection, {"path": "builtin:digits", "augment": {"random_crop_padding": 1, "hflip": True}}, "data")
    return cfg, load_data(cfg)


def level_run(digits, step_mode, device="cpu", epochs=3, **train):
    """One pruned level as the level runner trains it: mask, forgetting tracker, step schedule with a milestone,
    momentum and weight decay, a rewind callback saving the optimizer state, augmentation and a tail batch."""
    cfg, bundle = digits
    train_cfg = from_dict(TrainSection, {"batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": epochs,
                                         "schedule": "step", "milestones": [2], "gamma": 0.1, **train}, "train")
    torch.manual_seed(0)
    model = SmallConvNet().to(device)
    mean, std, _ = resolve_normalization(cfg, bundle, model)
    accelerate_private.reset_shared_state()  # an earlier test's Accelerator (bf16, say) must not set this one's precision
    accelerator = Accelerator(cpu=device == "cpu")
    source = BatchSource(bundle.train, bundle, cfg, mean, std, accelerator.device)
    trainer = Trainer(accelerator, train_cfg, {"train": source}, step_mode=step_mode)
    mask = TicketMask.dense(model).prune_magnitude(model, 0.5)
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply()
    tracker = ForgettingTracker(len(bundle.train), accelerator.device)
    positions = torch.arange(len(bundle.train))
    schedule = LevelSchedule.for_examples(len(positions), train_cfg.batch_size, epochs)
    saved = {}

    def rewind_point(unwrapped, optimizer):
        saved["optimizer"] = copy.deepcopy(optimizer.state_dict())

    optimizer = create_optimizer(model, train_cfg)
    result = trainer.train(model, optimizer, enforcer, positions, schedule, observer=tracker.update,
                           step_callbacks={7: rewind_point}, epoch_end=lambda epoch, m: tracker.end_epoch() or False)
    return {"model": model, "mask": mask, "optimizer": optimizer, "tracker": tracker, "result": result, "saved": saved,
            "schedule": schedule}


def assert_same_level(a, b):
    for (name, x), (_, y) in zip(a["model"].state_dict().items(), b["model"].state_dict().items()):
        assert torch.equal(x, y), name
    for name, keep in a["mask"].masks.items():
        weight = dict(b["model"].named_parameters())[name].detach().cpu()
        assert bool((weight[~keep] == 0).all()), name  # pruned weights exactly zero
    for x, y in zip(a["tracker"].state_dict().values(), b["tracker"].state_dict().values()):
        assert torch.equal(x, y)
    sa, sb = a["optimizer"].state_dict(), b["optimizer"].state_dict()
    assert sa["param_groups"] == sb["param_groups"]  # floats and flags as the eager loop leaves them: no tensors
    for key in sa["state"]:
        assert torch.equal(sa["state"][key]["momentum_buffer"], sb["state"][key]["momentum_buffer"])
    ra, rb = a["saved"]["optimizer"], b["saved"]["optimizer"]
    assert ra["param_groups"] == rb["param_groups"] and ra["state"].keys() == rb["state"].keys()
    for key in ra["state"]:
        assert torch.equal(ra["state"][key]["momentum_buffer"], rb["state"][key]["momentum_buffer"])
    assert a["result"].history == b["result"].history  # losses and accuracies, exactly
    assert (a["result"].steps, a["result"].examples) == (b["result"].steps, b["result"].examples)


def test_the_captured_step_function_gives_bit_identical_results_to_the_eager_loop(digits):
    """Must hold (issue 24): run without capture on a CPU at fp32, the step function a CUDA graph captures gives
    the eager loop's weights, masks, tracker counts, optimizer state and metrics, bit for bit."""
    eager = level_run(digits, None)
    uncaptured = level_run(digits, "uncaptured")
    assert eager["result"].cuda_graphs["captured"] is False and "cpu" in eager["result"].cuda_graphs["reason"]
    assert "without capture" in uncaptured["result"].cuda_graphs["reason"]
    full_batches = 3 * (eager["schedule"].steps_per_epoch - 1)  # one tail batch per epoch
    assert (uncaptured["result"].cuda_graphs["replayed_steps"], uncaptured["result"].cuda_graphs["eager_steps"]) == (full_batches, 3)
    assert len(eager["result"].history) == 3 and eager["schedule"].steps_per_epoch * 64 != len(digits[1].train)  # a tail batch
    assert_same_level(eager, uncaptured)
    # and the comparison can fail: one step more of training is visible in every part of it
    longer = level_run(digits, "uncaptured", epochs=4)
    with pytest.raises(AssertionError):
        assert_same_level(eager, longer)


def test_bf16_autocast_inside_the_step_matches_accelerates_wrapper(digits):
    """Mixed precision: the step enters its own autocast with the cast cache off instead of Accelerate's wrapper;
    on a CPU in bf16 that gives the same results as the eager loop too."""
    from prac_plugin.compat.accelerate_private import reset_shared_state

    runs = []
    try:
        for mode in (None, "uncaptured"):
            reset_shared_state()
            cfg, bundle = digits
            train_cfg = from_dict(TrainSection, {"batch_size": 64, "lr": 0.1, "epochs": 1, "mixed_precision": "bf16"}, "train")
            torch.manual_seed(0)
            accelerator = Accelerator(cpu=True, mixed_precision="bf16")
            model = accelerator.prepare_model(SmallConvNet())
            assert "forward" in model.__dict__  # Accelerate wrapped it in autocast
            mean, std, _ = resolve_normalization(cfg, bundle, model)
            trainer = Trainer(accelerator, train_cfg, {"train": BatchSource(bundle.train, bundle, cfg, mean, std, accelerator.device)},
                              step_mode=mode)
            enforcer = MaskEnforcer(model, TicketMask.dense(model).prune_magnitude(model, 0.3))
            enforcer.apply()
            positions = torch.arange(len(bundle.train))
            optimizer = accelerator.prepare_optimizer(create_optimizer(model, train_cfg))
            result = trainer.train(model, optimizer, enforcer, positions, LevelSchedule.for_examples(len(positions), 64, 1))
            runs.append((model.state_dict(), result.history))
    finally:
        reset_shared_state()
    (a, ha), (b, hb) = runs
    assert ha == hb
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_lr_tensor_follows_the_schedule_at_its_milestones(digits):
    """A float lr would be frozen into a captured graph: the step reads the lr from a device tensor that the
    trainer sets from the schedule before every step. Read back inside the step (from the optimizer, as the
    graph sees it), it equals the schedule's rate at every step, across both milestones."""
    cfg, bundle = digits
    train_cfg = from_dict(TrainSection, {"batch_size": 64, "lr": 0.1, "epochs": 4, "schedule": "step", "milestones": [1, 3],
                                         "gamma": 0.1}, "train")
    torch.manual_seed(0)
    model = SmallConvNet()
    mean, std, _ = resolve_normalization(cfg, bundle, model)
    accelerator = Accelerator(cpu=True)
    trainer = Trainer(accelerator, train_cfg, {"train": BatchSource(bundle.train, bundle, cfg, mean, std, accelerator.device)},
                      step_mode="uncaptured")
    optimizer = create_optimizer(model, train_cfg)
    seen = []

    @capturable
    def read_lr(logits, labels, index):
        lrs = [group["lr"] for group in optimizer.param_groups]
        seen.append((labels.numel(), [float(lr) if torch.is_tensor(lr) else None for lr in lrs],
                     [type(lr).__name__ for lr in lrs]))

    positions = torch.arange(len(bundle.train))
    schedule = LevelSchedule.for_examples(len(positions), 64, 4)
    trainer.train(model, optimizer, MaskEnforcer(model, TicketMask.dense(model)), positions, schedule, observer=read_lr)
    replays = [entry for entry in seen[3:] if entry[0] == 64]  # after the 3 warm-up calls; full batches only
    expected = [torch.tensor(0.1 * lr_factor(s, schedule.total_steps, schedule.steps_per_epoch, "step", [1, 3], 0.1)).item()
                for s in range(schedule.total_steps) if s % schedule.steps_per_epoch != schedule.steps_per_epoch - 1]
    assert [lrs for _, lrs, _ in replays] == [[value] * len(optimizer.param_groups) for value in expected]
    assert {round(v, 6) for v in expected} == {0.1, 0.01, 0.001}  # it moved at both milestones
    assert all(kinds == ["Tensor"] * len(optimizer.param_groups) for _, _, kinds in replays)
    tails = [entry for entry in seen if entry[0] != 64]
    assert len(tails) == 4 and all(kinds == ["float"] * len(optimizer.param_groups) for _, _, kinds in tails)  # eager tail
    assert all(isinstance(group["lr"], float) for group in optimizer.param_groups)  # floats again between steps


def test_state_restore_after_warm_up_puts_every_tensor_back_in_place():
    torch.manual_seed(0)
    model = SmallConvNet()
    optimizer = torch.optim.SGD([{"params": [model.conv1.weight, model.fc.weight], "weight_decay": 1e-4},
                                 {"params": [p for n, p in model.named_parameters() if n not in ("conv1.weight", "fc.weight")]}],
                                lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def train_step():
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    # momentum buffers for one group only (a resumed optimizer), none for the other
    for p in optimizer.param_groups[0]["params"]:
        optimizer.state[p]["momentum_buffer"] = torch.randn_like(p)
    tracker = ForgettingTracker(32)
    tracker.update(torch.randn(4, 10), torch.randint(0, 10, (4,)), torch.arange(4))
    sums = torch.tensor(3.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum_before = {id(p): optimizer.state[p]["momentum_buffer"].clone() for p in optimizer.param_groups[0]["params"]}
    tracker_before = tracker.state_dict()
    addresses = [p.data_ptr() for p in model.parameters()] + [b.data_ptr() for b in model.buffers()]
    buffers = [optimizer.state[p]["momentum_buffer"] for p in optimizer.param_groups[0]["params"]]

    state = StepState(model, optimizer, tracker.update, (sums,))
    for _ in range(3):  # the warm-up
        train_step()
        tracker.update(torch.randn(16, 10), y, torch.arange(16, 32))
        sums.add_(1.0)
        torch.rand(5)
    expected_random = (torch.get_rng_state(),)
    assert int(model.bn1.num_batches_tracked) == 3 and not torch.equal(model.bn1.running_mean, before["bn1.running_mean"])
    state.restore()

    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert int(model.bn1.num_batches_tracked) == 0
    assert [p.data_ptr() for p in model.parameters()] + [b.data_ptr() for b in model.buffers()] == addresses
    for p, buffer in zip(optimizer.param_groups[0]["params"], buffers):
        assert optimizer.state[p]["momentum_buffer"] is buffer and torch.equal(buffer, momentum_before[id(p)])
    for p in optimizer.param_groups[1]["params"]:  # created by the warm-up: zero, which SGD's first step equals
        assert bool((optimizer.state[p]["momentum_buffer"] == 0).all())
    for key, value in tracker.state_dict().items():
        assert torch.equal(value, tracker_before[key]), key
    assert float(sums) == 3.5
    assert not torch.equal(torch.get_rng_state(), expected_random[0])  # the generator is back where it was
    state_again = torch.rand(5)
    StepState(model, optimizer)  # taking a snapshot changes nothing
    state.restore()
    assert torch.equal(torch.rand(5), state_again)


def test_restore_fails_loudly_on_state_it_cannot_put_back():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = StepState(model, optimizer)
    optimizer.state[model.weight]["step_count"] = 3
    with pytest.raises(PracError, match="step_count"):
        state.restore()


def test_zero_momentum_buffers_equal_sgds_first_step():
    """The captured step creates momentum buffers as zeros before capture; with no dampening, SGD's update from
    a zero buffer is its first step's (buffer = gradient), bit for bit, with and without Nesterov."""
    for nesterov in (False, True):
        torch.manual_seed(0)
        a, b = nn.Linear(5, 3), nn.Linear(5, 3)
        b.load_state_dict(a.state_dict())
        opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
        opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
        from prac_plugin.engine.captured import create_momentum_buffers

        create_momentum_buffers(opt_b)
        x = torch.randn(8, 5)
        for model, opt in ((a, opt_a), (b, opt_b)):
            for _ in range(3):
                opt.zero_grad()
                model(x).square().sum().backward()
                opt.step()
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)


# -- the option and the decision -------------------------------------------------------------------------
def test_cuda_graphs_option_validation():
    assert parse_recipe(quick_recipe()).train.cuda_graphs == "auto"
    for text, value in (("on", "on"), ("off", "off"), ("auto", "auto"), ("true", "on"), ("false", "off")):
        raw = quick_recipe()
        raw["train"].update(yaml.safe_load(f"cuda_graphs: {text}"))  # YAML reads bare on/off as booleans
        assert parse_recipe(raw).train.cuda_graphs == value
    with pytest.raises(PracError, match="cuda_graphs"):
        parse_recipe(quick_recipe(train={"cuda_graphs": "sometimes"}))
    with pytest.raises(PracError, match="cuda_graphs"):
        decide("maybe", **_capturable_run())


def _capturable_run(**changes) -> dict:
    model = SmallConvNet()
    run = dict(device_type="cuda", mixed_precision="bf16", has_scaler=False, grad_clip=None, num_processes=1,
               plain_distribution=True, accumulation_steps=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
               observer=ForgettingTracker(4).update, compile_backend="no", model=model)
    run.update(changes)
    return run


@pytest.mark.parametrize("changes, reason", [
    ({"device_type": "cpu"}, "the device is cpu"),
    ({"mixed_precision": "fp16", "has_scaler": True}, "gradient scaler"),
    ({"grad_clip": 1.0}, "grad_clip"),
    ({"num_processes": 2}, "DDP"),
    ({"plain_distribution": False}, "DeepSpeed"),
    ({"accumulation_steps": 4}, "accumulation"),
    ({"optimizer": torch.optim.Adam(nn.Linear(2, 2).parameters())}, "Adam"),
    ({"optimizer": torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9, dampening=0.1)}, "dampening"),
    ({"observer": lambda logits, labels, index: None}, "not marked capturable"),
    ({"compile_backend": "cudagraphs"}, "cudagraphs"),
    ({"model": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=None))}, "momentum=None"),
])
def test_auto_refuses_what_cannot_be_captured_and_says_why(changes, reason):
    decision = decide("auto", **_capturable_run(**changes))
    assert not decision.captured and reason in decision.reason
    assert decision.figures() == {"requested": "auto", "captured": False, "reason": decision.reason}
    assert reason in decision.line() and "eager" in decision.line()
    assert require(decision) is decision  # auto: the eager loop runs
    with pytest.raises(PracError, match="cannot be captured here"):
        require(decide("on", **_capturable_run(**changes)))  # on: an error naming the reason


def test_auto_captures_a_plain_cuda_sgd_run_and_off_never_does():
    assert decide("auto", **_capturable_run()) == GraphDecision("auto", True, "captured")
    assert decide("on", **_capturable_run(mixed_precision="no", observer=None)).captured
    off = decide("off", **_capturable_run())
    assert not off.captured and off.reason == "train.cuda_graphs is off"
    reasons = decide("auto", **_capturable_run(device_type="cpu", grad_clip=2.0)).reason
    assert "cpu" in reasons and "grad_clip" in reasons  # every reason, not only the first


def test_the_forgetting_tracker_is_capturable_and_keeps_its_buffer_in_place():
    tracker = ForgettingTracker(6)
    assert is_capturable(tracker.update) and is_capturable(None) and not is_capturable(lambda *a: None)
    buffer = tracker._epoch
    tracker.update(torch.eye(2)[[0, 1, 0]], torch.tensor([0, 1, 1]), torch.tensor([0, 2, 4]))
    tracker.end_epoch(lambda epoch: epoch.clone())  # a combine that returns a new tensor (several processes)
    assert tracker._epoch is buffer and bool((buffer == -1).all())
    assert tracker.presentations.tolist() == [1, 0, 1, 0, 1, 0] and tracker.last_correct.tolist() == [True, False, True, False, False, False]


def test_cuda_graphs_on_refuses_a_cpu_run_and_auto_records_why_in_the_metrics(tmp_path):
    from prac_plugin.engine.run_loop import run_recipe

    with pytest.raises(PracError, match="cuda_graphs = on.*the device is cpu"):
        run_recipe(parse_recipe(quick_recipe(train={"cuda_graphs": "on", "epochs": 1}, ticket={"levels": 0, "rewind": "0it"})), str(tmp_path / "on"),
                   log=lambda *_: None)
    run_recipe(parse_recipe(quick_recipe(train={"epochs": 1}, ticket={"levels": 0, "rewind": "0it"})), str(tmp_path / "auto"), log=lambda *_: None)
    import json

    metrics = json.loads((tmp_path / "auto" / "level_00" / "metrics.json").read_text())
    assert metrics["cuda_graphs"] == {"requested": "auto", "captured": False, "reason": "the device is cpu: CUDA graphs need a CUDA GPU"}


# -- on a GPU ---------------------------------------------------------------------------------------------
def _device_batches(count, batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 16, 16, generator=generator).cuda(), torch.randint(0, 10, (batch,), generator=generator).cuda(),
             torch.randperm(4 * batch, generator=generator)[:batch].cuda()) for _ in range(count)]


def _direct_run(mode, batches, mixed_precision="no", channels_last=False, milestones=(10, 20)):
    """A small model trained through `CapturedStep` directly, lr set per step from a step schedule."""
    torch.manual_seed(0)
    model = SmallConvNet(in_chans=3).cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    mask = TicketMask.dense(model).prune_magnitude(model, 0.6)
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply()
    tracker = ForgettingTracker(4 * batches[0][0].shape[0], "cuda")
    step = CapturedStep(model, optimizer, enforcer, tracker.update, torch.device("cuda"), batches[0][0].shape[0], mixed_precision,
                        channels_last=channels_last, mode=mode)
    step.begin_epoch()
    lrs = []
    for i, (x, y, index) in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * 0.1 ** sum(i >= m for m in milestones)
        step.step(x.contiguous(memory_format=torch.channels_last) if channels_last else x, y, index)
        lrs.append(step.lr[0].item() if mode != "eager" else optimizer.param_groups[0]["lr"])
    torch.cuda.synchronize()
    return model, mask, step, lrs, tracker


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_captured_step_matches_eager_on_a_small_model_within_tolerance(mixed_precision):
    batches = _device_batches(30, 32)
    eager_model, _, eager_step, _, eager_tracker = _direct_run("eager", batches, mixed_precision)
    model, mask, step, lrs, tracker = _direct_run("graph", batches, mixed_precision)
    assert step.graph is not None and step.captures == 1 and step.replays == 30
    tolerance = 2e-3 if mixed_precision == "no" else 5e-2
    for (name, p), q in zip(model.state_dict().items(), eager_model.state_dict().values()):
        if p.is_floating_point():
            assert torch.allclose(p, q, rtol=tolerance, atol=tolerance), name
        else:
            assert torch.equal(p, q), name  # num_batches_tracked: 30 in both, the warm-up undone
    params = dict(model.named_parameters())
    for name, keep in mask.masks.items():
        assert bool((params[name].detach().cpu()[~keep] == 0).all()), name  # pruned weights exactly zero
    assert float(step.loss_sum) == pytest.approx(float(eager_step.loss_sum), rel=5e-2)
    assert int(tracker.presentations.sum() + (tracker._epoch != -1).sum()) == int(eager_tracker.presentations.sum() + (eager_tracker._epoch != -1).sum())
    assert lrs[0] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.01) and lrs[25] == pytest.approx(0.001)  # lr moving


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_captured_step_with_channels_last_and_a_tail_batch():
    batches = _device_batches(12, 32) + [tuple(t[:8] for t in _device_batches(1, 32, seed=1)[0])]
    model, mask, step, _, _ = _direct_run("graph", batches, "bf16", channels_last=True)
    eager_model, *_ = _direct_run("eager", batches, "bf16", channels_last=True)
    assert step.replays == 12 and step.eager_steps == 1  # the tail batch ran the same function eagerly
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert torch.allclose(p, q, rtol=5e-2, atol=5e-2)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_a_level_trained_with_cuda_graphs_on_records_it_and_keeps_pruned_weights_zero(digits):
    from prac_plugin.compat.accelerate_private import reset_shared_state

    reset_shared_state(partial=True)  # the CPU tests before made Accelerate's process-wide device the CPU
    try:
        captured = level_run(digits, None, device="cuda", cuda_graphs="on")
        eager = level_run(digits, None, device="cuda", cuda_graphs="off")
    finally:
        reset_shared_state(partial=True)
    assert captured["result"].cuda_graphs == {"requested": "on", "captured": True, "reason": "captured",
                                              "replayed_steps": 3 * (captured["schedule"].steps_per_epoch - 1), "eager_steps": 3}
    assert eager["result"].cuda_graphs["captured"] is False
    params = dict(captured["model"].named_parameters())
    for name, keep in captured["mask"].masks.items():
        assert bool((params[name].detach().cpu()[~keep] == 0).all()), name
    for a, b in zip(captured["result"].history, eager["result"].history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
    assert isinstance(captured["saved"]["optimizer"]["param_groups"][0]["lr"], float)  # the rewind point's state: floats
