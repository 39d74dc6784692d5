"""Model creation through timm's factory, with the classic LTH architectures registered into timm."""

from __future__ import annotations

from typing import TYPE_CHECKING

import difflib

import timm
import torch

from ..errors import PracError
from . import lth as models_lth  # noqa: F401  (registers lenet_300_100, cifar_resnet*, cifar_vgg16 into timm)

if TYPE_CHECKING:  # recipes import the strategies, which use the engine: types only here
    from ..config.recipes import ModelSection


def model_kwargs(cfg: ModelSection, num_classes: int, in_chans: int) -> dict:
    """The keyword arguments ``timm.create_model`` gets: the recipe's kwargs plus classes and channels
    (a structured ticket rebuilds its dense model from these)."""
    return {**cfg.kwargs, "num_classes": cfg.num_classes or num_classes, "in_chans": cfg.in_chans or in_chans}


def create_model(cfg: ModelSection, num_classes: int, in_chans: int, image_size: tuple[int, int]) -> torch.nn.Module:
    """``timm.create_model`` with the dataset's classes and channels; checked with one forward pass."""
    if not timm.is_model(cfg.name):
        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise PracError(f"unknown model.name {cfg.name!r}: not in timm's registry{hint}")
    kwargs = model_kwargs(cfg, num_classes, in_chans)
    try:
        model = timm.create_model(cfg.name, pretrained=cfg.pretrained, **kwargs)
    except (TypeError, ValueError, RuntimeError, OSError) as exc:
        raise PracError(f"timm could not create model {cfg.name!r} with {kwargs}: {exc}") from None
    try:
        with torch.no_grad():
            model.eval()
            out = model(torch.zeros(2, kwargs["in_chans"], *image_size))
            model.train()
    except RuntimeError as exc:
        raise PracError(
            f"model {cfg.name!r} fails on the dataset's images of shape {(kwargs['in_chans'], *image_size)}: "
            f"{str(exc).splitlines()[0]}; set model.kwargs (e.g. img_size) or data.image_size"
        ) from None
    if out.shape[-1] != kwargs["num_classes"]:
        raise PracError(f"model {cfg.name!r} outputs {out.shape[-1]} classes, the dataset has {kwargs['num_classes']}")
    return model
