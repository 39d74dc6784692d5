"""Classic lottery-ticket architectures (LeNet-300-100, CIFAR ResNet-20/32/56, CIFAR VGG-16) registered in timm.

Importing this module registers ``lenet_300_100``, ``cifar_resnet20``, ``cifar_resnet32``, ``cifar_resnet56`` and
``cifar_vgg16`` so that ``timm.create_model(name, num_classes=..., in_chans=...)`` works. No pretrained weights exist.

Init (all models): Kaiming-normal weights for Conv2d/Linear (mode="fan_in", ReLU gain), zero Linear/conv biases,
BatchNorm weight 1 and bias 0.
"""
from typing import Any, Dict, List, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ["LeNet300100", "CifarResNet", "CifarVGG"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)

VGG16_CFG: List[Union[int, str]] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_in, relu) for conv/linear weights, zero biases, BN weight 1 / bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _make_fc(in_features: int, num_classes: int) -> nn.Module:
    """Linear classifier, or Identity when num_classes == 0 (timm convention)."""
    fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
    _init_weights(fc)
    return fc


class _TimmHeadMixin:
    """Shared timm-style classifier accessors (expects ``fc``, ``num_features`` and ``num_classes``)."""

    fc: nn.Module
    num_features: int
    num_classes: int

    def get_classifier(self) -> nn.Module:
        """Return the classifier module."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.fc = _make_fc(self.num_features, num_classes)


class LeNet300100(_TimmHeadMixin, nn.Module):
    """LeNet-300-100 MLP (LeCun et al. 1998; Frankle & Carbin 2019)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: Union[int, List[int]] = 28, **kwargs: Any) -> None:
        super().__init__()
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        self.num_features = self.head_hidden_size = 100
        height, width = (img_size, img_size) if isinstance(img_size, int) else img_size  # timm's config.json: [H, W]
        self.fc1 = nn.Linear(in_chans * height * width, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc = _make_fc(100, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten and apply the two hidden layers."""
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.relu(self.fc2(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Apply the classifier (skipped when ``pre_logits``)."""
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.forward_head(self.forward_features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with identity or 1x1-conv-BN (option B) shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(_TimmHeadMixin, nn.Module):
    """CIFAR ResNet of depth 6n+2 (He et al. 2016), 1x1-conv projection shortcuts as in open_lth."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3, width: int = 16,
                 **kwargs: Any) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.num_classes, self.in_chans, self.depth = num_classes, in_chans, depth
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        chs = width
        for i, out_chs in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(chs if j == 0 else out_chs, out_chs, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            chs = out_chs
        self.num_features = self.head_hidden_size = chs
        self.fc = _make_fc(chs, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map after the last stage."""
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then classifier (skipped when ``pre_logits``)."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.forward_head(self.forward_features(x))


class CifarVGG(_TimmHeadMixin, nn.Module):
    """CIFAR VGG (Simonyan & Zisserman 2015, open_lth variant): 3x3 conv-BN-ReLU stacks, GAP, one Linear."""

    def __init__(self, cfg: List[Union[int, str]] = VGG16_CFG, num_classes: int = 10, in_chans: int = 3,
                 **kwargs: Any) -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        layers: List[nn.Module] = []
        chs = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(chs, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                chs = int(v)
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = chs
        self.fc = _make_fc(chs, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map after the conv stack."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then classifier (skipped when ``pre_logits``)."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """Default pretrained cfg (no weights) for a CIFAR-10 model."""
    return {"num_classes": 10, "input_size": (3, 32, 32), "pool_size": None, "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
            "first_conv": "conv1", "classifier": "fc", **kwargs}


default_cfgs = generate_default_cfgs({
    "lenet_300_100": _cfg(input_size=(1, 28, 28), mean=FMNIST_MEAN, std=FMNIST_STD, first_conv="fc1"),
    "cifar_resnet20": _cfg(),
    "cifar_resnet32": _cfg(),
    "cifar_resnet56": _cfg(),
    "cifar_vgg16": _cfg(first_conv="features.0"),
})


def _given_weights(kwargs: Dict[str, Any]) -> bool:
    """Whether ``create_model`` was pointed at weights: ``local-dir:``/``hf-hub:`` names (a ticket exported with
    ``prac export --format timm-hub``) or a ``pretrained_cfg_overlay`` with a file."""
    sources = [kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")]
    for cfg in sources:
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
        if isinstance(cfg, dict) and any(cfg.get(key) for key in ("file", "hf_hub_id", "url", "state_dict")):
            return True
    return False


def _create(cls: Type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """Build ``variant`` through timm's builder (attaches ``pretrained_cfg``). No published weights exist: pretrained
    only loads weights the caller names (an exported ticket's folder or Hub repository)."""
    if pretrained and not _given_weights(kwargs):
        raise ValueError(f"No pretrained weights exist for '{variant}'; use pretrained=False.")
    return build_model_with_cfg(cls, variant, pretrained=pretrained, **kwargs)


@register_model
def lenet_300_100(pretrained: bool = False, **kwargs: Any) -> LeNet300100:
    """LeNet-300-100 (default cfg: 1x28x28 Fashion-MNIST)."""
    return _create(LeNet300100, "lenet_300_100", pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-20 (n=3)."""
    return _create(CifarResNet, "cifar_resnet20", pretrained, depth=20, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32 (n=5)."""
    return _create(CifarResNet, "cifar_resnet32", pretrained, depth=32, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-56 (n=9)."""
    return _create(CifarResNet, "cifar_resnet56", pretrained, depth=56, **kwargs)


@register_model
def cifar_vgg16(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """CIFAR VGG-16 (open_lth config, GAP + single Linear)."""
    return _create(CifarVGG, "cifar_vgg16", pretrained, cfg=VGG16_CFG, **kwargs)
