"""Test-only: lets timm's real train.py run under torchrun on CPU processes (gloo).

timm's scripts wrap the model as ``DistributedDataParallel(model, device_ids=[device])``, which torch accepts
for GPU devices only; for a CPU module ``device_ids`` must be None. Nothing else changes. Put this folder on
PYTHONPATH for the launched processes (Python imports ``sitecustomize`` at start-up).
"""

from torch.nn.parallel import DistributedDataParallel

_init = DistributedDataParallel.__init__


def _cpu_friendly_init(self, module, device_ids=None, *args, **kwargs):
    if device_ids and all(getattr(d, "type", d) == "cpu" for d in device_ids):
        device_ids = None
    _init(self, module, device_ids, *args, **kwargs)


DistributedDataParallel.__init__ = _cpu_friendly_init
