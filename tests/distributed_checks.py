"""Checks that need several real processes; `tests/test_multiprocess.py` runs this under `accelerate launch`.

1. Forgetting statistics gathered across processes equal one process's statistics on the same predictions,
   each example counted exactly once, also when the last global batch does not split evenly.
2. Prune-disagreement predictions, each process scoring its share of every batch, equal one process scoring
   the whole split.
3. The per-level mask check accepts identical masks and refuses masks that differ between processes.
"""

import torch
from accelerate import Accelerator

import timm

import prac_plugin  # noqa: F401  (registers lenet_300_100)
from prac_plugin.config.schema import from_dict
from prac_plugin.data.sources import BatchSource, load_data, resolve_normalization
from prac_plugin.errors import PracError
from prac_plugin.tickets.masks import TicketMask
from prac_plugin.engine.level import check_same_mask_everywhere
from prac_plugin.config.recipes import DataSection
from prac_plugin.strategies.prac.disagreement import predictions
from prac_plugin.strategies.prac.forgetting import ForgettingTracker, max_over_processes

accelerator = Accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
assert world >= 2, f"launched with {world} process(es)"

num_examples, batch_size, epochs, classes = 1000, 64, 6, 5  # 1000 = 15 batches of 64 + one of 40
generator = torch.Generator().manual_seed(0)
labels = torch.randint(0, classes, (num_examples,), generator=generator)
mine = ForgettingTracker(num_examples)
everything = ForgettingTracker(num_examples)  # what one process sees: every batch whole
for epoch in range(epochs):
    order = torch.randperm(num_examples, generator=generator)
    logits = torch.randn(num_examples, classes, generator=generator) + 2.0 * epoch / epochs * torch.nn.functional.one_hot(labels, classes)
    for batch in torch.split(order, batch_size):
        everything.update(logits[batch], labels[batch], batch)
        share = batch[rank::world]  # BatchSource's split of a global batch
        mine.update(logits[share], labels[share], share)
    everything.end_epoch()
    mine.end_epoch(max_over_processes)
for name in ("forgetting", "presentations", "ever_correct", "last_correct"):
    assert torch.equal(getattr(mine, name), getattr(everything, name)), name
assert int(mine.presentations.sum()) == num_examples * epochs  # each example exactly once per epoch
assert torch.equal(mine.critical(), everything.critical())

cfg = from_dict(DataSection, {"path": "builtin:digits"}, "data")
data = load_data(cfg)
torch.manual_seed(0)
model = timm.create_model("lenet_300_100", num_classes=data.num_classes, in_chans=1, img_size=8)
mean, std, _ = resolve_normalization(cfg, data, model)
source = BatchSource(data.train, data, cfg, mean, std, accelerator.device, rank, world)
alone = BatchSource(data.train, data, cfg, mean, std, accelerator.device)  # world size 1: scores everything
shared, whole = predictions(model, source, 100), predictions(model, alone, 100)
assert (shared >= 0).all() and torch.equal(shared, whole), "sharded predictions differ from one process's"

same = TicketMask({"w": torch.arange(12).view(3, 4) % 3 == 0})
check_same_mask_everywhere(accelerator, same, 1)
different = TicketMask({"w": torch.arange(12).view(3, 4) % 3 == (rank % 2)})
try:
    check_same_mask_everywhere(accelerator, different, 1)
except PracError as exc:
    assert "differs between processes" in str(exc)
else:
    raise AssertionError("a mask that differs between processes was accepted")
print(f"distributed checks passed on rank {rank} of {world}", flush=True)
# An orderly gloo shutdown: left to interpreter exit, a rank sometimes aborts in C++ ("terminate called without
# an active exception", SIGABRT), failing the launch although every check passed. `prac run` ends the same way.
accelerator.end_training()
