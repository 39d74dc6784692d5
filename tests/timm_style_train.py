#!/usr/bin/env python3
"""A training script in the structure of timm's ``train.py``, built from timm's public functions, with the
prac_plugin hook attached. Every line the hook adds ends with ``# prac`` and the one it changes with
``# prac: <the original line>``: the tests also run this script with the hook taken out that way. A small,
CPU-friendly subset of timm's flags; not a copy of timm's script.

    python tests/timm_style_train.py DATA_ROOT --dataset hfds/PATH --epochs 3 --prac-select --prac-output out
    torchrun --nproc_per_node 2 tests/timm_style_train.py ...    # the script initializes torch.distributed
"""

import argparse
import os
from contextlib import suppress
from functools import partial

import torch
from timm.data import (
    FastCollateMixup,
    Mixup,
    create_dataset,
    create_loader,
    resolve_data_config,
)
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import create_model
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    AverageMeter,
    ModelEmaV3,
    NativeScaler,
    accuracy,
    random_seed,
    reduce_tensor,
)
from torch import nn

import prac_plugin.timm  # prac

parser = argparse.ArgumentParser(description="timm-style image classification training")
group = parser.add_argument_group("Dataset")
group.add_argument("data_dir", nargs="?", metavar="DIR", help="dataset root (hfds/: the datasets cache folder)")
group.add_argument("--dataset", default="", help="hfds/<path or hub id>, or empty for an image folder")
group.add_argument("--train-split", default="train")
group.add_argument("--val-split", default="validation")
group = parser.add_argument_group("Model")
group.add_argument("--model", default="test_resnet")
group.add_argument("--num-classes", type=int, default=None)
group.add_argument("--initial-checkpoint", default="", help="load these weights at creation (e.g. a rewind point)")
group.add_argument("--input-size", type=int, nargs=3, default=None, metavar="N N N")
group.add_argument("-b", "--batch-size", type=int, default=32)
group.add_argument("--model-ema", action="store_true")
group.add_argument("--model-ema-decay", type=float, default=0.9)
group = parser.add_argument_group("Optimizer and schedule")
group.add_argument("--opt", default="sgd")
group.add_argument("--lr", type=float, default=0.05)
group.add_argument("--momentum", type=float, default=0.9)
group.add_argument("--weight-decay", type=float, default=1e-4)
group.add_argument("--clip-grad", type=float, default=None)
group.add_argument("--sched", default="cosine")
group.add_argument("--epochs", type=int, default=3)
group.add_argument("--start-epoch", type=int, default=0, help="start the schedule at this epoch (rewinding to Nep)")
group.add_argument("--decay-epochs", type=float, default=100)
group.add_argument("--warmup-epochs", type=int, default=0)
group = parser.add_argument_group("Augmentation")
group.add_argument("--scale", type=float, nargs=2, default=(0.6, 1.0))
group.add_argument("--hflip", type=float, default=0.5)
group.add_argument("--mixup", type=float, default=0.0)
group.add_argument("--cutmix", type=float, default=0.0)
group.add_argument("--mixup-prob", type=float, default=1.0)
group.add_argument("--mixup-switch-prob", type=float, default=0.5)
group.add_argument("--mixup-mode", default="batch")
group.add_argument("--smoothing", type=float, default=0.0)
group = parser.add_argument_group("Miscellaneous")
group.add_argument("--amp", action="store_true", help="native autocast (bfloat16 on a CPU)")
group.add_argument("--device", default="cpu")
group.add_argument("--seed", type=int, default=42)
group.add_argument("-j", "--workers", type=int, default=0)
group.add_argument("--no-prefetcher", action="store_true")
group.add_argument("--output", default="")
group.add_argument("--experiment", default="run")
prac_plugin.timm.add_args(parser)  # prac


def main(argv=None):
    args = parser.parse_args(argv)
    args.prefetcher = not args.no_prefetcher
    args.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args.world_size, args.rank = 1, 0
    if args.distributed:  # the script starts torch.distributed itself, as timm's train.py does
        torch.distributed.init_process_group(backend="gloo" if args.device == "cpu" else "nccl")
        args.world_size, args.rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    device = torch.device(args.device)
    random_seed(args.seed, args.rank)

    model = create_model(args.model, num_classes=args.num_classes, checkpoint_path=args.initial_checkpoint)
    data_config = resolve_data_config(vars(args), model=model)
    model.to(device)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args))
    prac = prac_plugin.timm.hook(args, model)  # prac

    amp_autocast, loss_scaler = suppress, None
    if args.amp:
        amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
        amp_autocast = partial(torch.autocast, device_type=device.type, dtype=amp_dtype)
        loss_scaler = NativeScaler(device=device.type) if amp_dtype == torch.float16 else None
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(model)

    dataset_train = create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True)
    dataset_eval = create_dataset(args.dataset, root=args.data_dir, split=args.val_split, is_training=False)
    collate_fn = mixup_fn = None
    mixup_active = args.mixup > 0 or args.cutmix > 0
    if mixup_active:
        mixup_args = {"mixup_alpha": args.mixup, "cutmix_alpha": args.cutmix, "prob": args.mixup_prob, "switch_prob": args.mixup_switch_prob,
                      "mode": args.mixup_mode, "label_smoothing": args.smoothing, "num_classes": args.num_classes}
        if args.prefetcher:
            collate_fn = FastCollateMixup(**mixup_args)
        else:
            mixup_fn = Mixup(**mixup_args)
    dataset_train, collate_fn, mixup_fn = prac.wrap(dataset_train, collate_fn, mixup_fn)  # prac

    common = {"input_size": data_config["input_size"], "use_prefetcher": args.prefetcher, "mean": data_config["mean"],
              "std": data_config["std"], "num_workers": args.workers, "distributed": args.distributed, "device": device}
    loader_train = create_loader(dataset_train, batch_size=args.batch_size, is_training=True, scale=args.scale, hflip=args.hflip,
                                 color_jitter=0.0, collate_fn=collate_fn, **common)
    loader_eval = create_loader(dataset_eval, batch_size=args.batch_size, is_training=False, crop_pct=1.0, **common)

    if mixup_active:
        train_loss_fn = SoftTargetCrossEntropy()
    elif args.smoothing:
        train_loss_fn = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        train_loss_fn = nn.CrossEntropyLoss()
    updates_per_epoch = len(loader_train)
    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, **scheduler_kwargs(args), updates_per_epoch=updates_per_epoch)
    if args.start_epoch > 0:
        lr_scheduler.step(args.start_epoch)
    output_dir = os.path.join(args.output, args.experiment) if args.output else None
    prac.start(optimizer, num_epochs, updates_per_epoch, output_dir, args.start_epoch)  # prac

    history = []
    for epoch in range(args.start_epoch, num_epochs):
        if args.distributed:
            loader_train.sampler.set_epoch(epoch)
        train_metrics = train_one_epoch(
            epoch, model, loader_train, optimizer, train_loss_fn, args, device, lr_scheduler=lr_scheduler,
            amp_autocast=amp_autocast, loss_scaler=loss_scaler, model_ema=model_ema, mixup_fn=mixup_fn,
            prac=prac,  # prac
        )
        eval_metrics = validate(model, loader_eval, args, device, amp_autocast)
        prac.end_epoch()  # prac
        lr_scheduler.step(epoch + 1, eval_metrics["top1"])
        history.append({**train_metrics, **eval_metrics})
    prac.finish()  # prac
    unwrapped = model.module if args.distributed else model
    if args.distributed:
        torch.distributed.destroy_process_group()
    return {
        "model": unwrapped, "model_ema": model_ema, "history": history, "dataset_train": dataset_train,
        "prac": prac,  # prac
    }


def train_one_epoch(
        epoch, model, loader, optimizer, loss_fn, args, device, lr_scheduler=None, amp_autocast=suppress,
        loss_scaler=None, model_ema=None, mixup_fn=None,
        prac=None,  # prac
):
    losses = AverageMeter()
    model.train()
    num_updates = epoch * len(loader)
    for input, target in loader:
        if not args.prefetcher:
            input, target = input.to(device), target.to(device)
            if mixup_fn is not None:
                input, target = mixup_fn(input, target)

        def _forward():
            with amp_autocast():
                output = model(input)
                loss = loss_fn(output, prac.observe(output, target))  # prac: loss = loss_fn(output, target)
            return loss

        loss = _forward()
        optimizer.zero_grad()
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=args.clip_grad, parameters=model.parameters())
        else:
            loss.backward()
            if args.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        num_updates += 1
        prac.step()  # prac
        losses.update(loss.item(), input.size(0))
        lr_scheduler.step_update(num_updates=num_updates, metric=losses.avg)
    return {"train_loss": losses.avg}


def validate(model, loader, args, device, amp_autocast=suppress):
    top1, losses = AverageMeter(), AverageMeter()
    loss_fn = nn.CrossEntropyLoss()
    model.eval()
    with torch.no_grad():
        for input, target in loader:
            if not args.prefetcher:
                input, target = input.to(device), target.to(device)
            with amp_autocast():
                output = model(input)
            loss = loss_fn(output.float(), target)
            acc1 = accuracy(output, target, topk=(1,))[0]
            if args.distributed:
                loss, acc1 = reduce_tensor(loss, args.world_size), reduce_tensor(acc1, args.world_size)
            losses.update(loss.item(), input.size(0))
            top1.update(acc1.item(), output.size(0))
    return {"loss": losses.avg, "top1": top1.avg}


if __name__ == "__main__":
    main()
