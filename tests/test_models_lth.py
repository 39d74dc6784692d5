"""Tests for the lottery-ticket architectures registered in timm by prac_plugin.models.lth."""
import pytest
import timm
import torch
import torch.nn as nn

import prac_plugin.models.lth  # noqa: F401  (registers the models)

ALL_MODELS = ["lenet_300_100", "cifar_resnet20", "cifar_resnet32", "cifar_resnet56", "cifar_vgg16"]
CIFAR_MODELS = ["cifar_resnet20", "cifar_resnet32", "cifar_resnet56", "cifar_vgg16"]


def _n_params(model: nn.Module) -> int:
    """Number of trainable parameters (BN running stats are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def _input(name: str, in_chans: int, batch: int = 2) -> torch.Tensor:
    """Small input batch; LeNet needs its img_size, conv nets take 16x16 to stay fast."""
    size = 28 if name == "lenet_300_100" else 16
    return torch.randn(batch, in_chans, size, size)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_create_and_forward(name: str, in_chans: int) -> None:
    model = timm.create_model(name, num_classes=7, in_chans=in_chans).eval()
    assert model.num_classes == 7 and model.in_chans == in_chans
    with torch.no_grad():
        out = model(_input(name, in_chans, batch=3))
        feats = model.forward_features(_input(name, in_chans, batch=3))
        pre = model.forward_head(feats, pre_logits=True)
    assert out.shape == (3, 7)
    assert pre.shape == (3, model.num_features)
    assert torch.isfinite(out).all()


def test_forward_head_matches_forward() -> None:
    model = timm.create_model("cifar_resnet20", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


def test_resnet20_param_count_option_b() -> None:
    # Hand count, 10 classes, conv bias=False, BN affine = 2*C params:
    #   stem: conv 3*16*9=432 + BN 32                                       =     464
    #   stage1 (16ch): 3 blocks * (2*16*16*9 + 2*32) = 3*4,672             =  14,016
    #   stage2 (32ch): first  16*32*9 + 32*32*9 + 2*64 + 1x1 16*32 + BN 64 =  14,528
    #                  2 more * (2*32*32*9 + 2*64) = 2*18,560              =  37,120
    #   stage3 (64ch): first  32*64*9 + 64*64*9 + 2*128 + 1x1 32*64 + 128  =  57,728
    #                  2 more * (2*64*64*9 + 2*128) = 2*73,984             = 147,968
    #   fc: 64*10 + 10                                                     =     650
    #   total                                                              = 272,474
    # (Option-A zero-padding shortcuts would drop the 576 + 2,176 projection params -> 269,722.)
    assert _n_params(timm.create_model("cifar_resnet20", num_classes=10)) == 272_474


def test_deeper_resnet_param_counts() -> None:
    # Same per-block counts as above with n=5 and n=9 blocks per stage:
    #   resnet32: 464 + 5*4,672 + (14,528 + 4*18,560) + (57,728 + 4*73,984) + 650 = 466,906
    #   resnet56: 464 + 9*4,672 + (14,528 + 8*18,560) + (57,728 + 8*73,984) + 650 = 855,770
    assert _n_params(timm.create_model("cifar_resnet32", num_classes=10)) == 466_906
    assert _n_params(timm.create_model("cifar_resnet56", num_classes=10)) == 855_770


def test_lenet_param_count() -> None:
    # 784*300+300 + 300*100+100 + 100*10+10 = 235,500 + 30,100 + 1,010 = 266,610
    model = timm.create_model("lenet_300_100", num_classes=10, in_chans=1, img_size=28)
    assert _n_params(model) == 266_610


def test_vgg16_structure_and_param_count() -> None:
    model = timm.create_model("cifar_vgg16", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13 and len(linears) == 1
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    # conv weights (bias=False): 3*64*9 + 64*64*9 + 64*128*9 + 128*128*9 + 128*256*9 + 2*256*256*9
    #   + 256*512*9 + 5*512*512*9 = 14,710,464; BN 2*(2*64 + 2*128 + 3*256 + 6*512) = 8,448; fc 5,130
    assert _n_params(model) == 14_724_042


@pytest.mark.parametrize("name,n", [("cifar_resnet20", 3), ("cifar_resnet32", 5), ("cifar_resnet56", 9)])
def test_resnet_depth(name: str, n: int) -> None:
    model = timm.create_model(name, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.kernel_size == (3, 3) for c in convs) == 6 * n + 1
    shortcuts = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(shortcuts) == 2 and all(c.stride == (2, 2) for c in shortcuts)
    assert model.get_classifier().in_features == 64


def test_resnet_width() -> None:
    model = timm.create_model("cifar_resnet20", num_classes=10, width=32)
    assert model.conv1.out_channels == 32 and model.num_features == 128
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_classifier_api(name: str) -> None:
    model = timm.create_model(name, num_classes=7, in_chans=1).eval()
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert model.get_classifier() is last_linear is model.fc
    assert model.get_classifier().out_features == 7
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.get_classifier().out_features == 5
    with torch.no_grad():
        assert model(_input(name, 1)).shape == (2, 5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_pretrained_raises(name: str) -> None:
    with pytest.raises(ValueError):
        timm.create_model(name, pretrained=True)


def test_registry_and_pretrained_cfg() -> None:
    assert set(CIFAR_MODELS) <= set(timm.list_models("cifar_*"))
    assert "lenet_300_100" in timm.list_models("lenet*")
    model = timm.create_model("cifar_resnet20")
    assert model.num_classes == 10 and model.in_chans == 3
    assert model.pretrained_cfg["mean"] == (0.4914, 0.4822, 0.4465)
    assert model.pretrained_cfg["std"] == (0.2470, 0.2435, 0.2616)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["classifier"] == "fc"
    lenet = timm.create_model("lenet_300_100")
    assert lenet.pretrained_cfg["mean"] == (0.2860,) and lenet.pretrained_cfg["input_size"] == (1, 28, 28)
    assert lenet.in_chans == 1  # timm fills in_chans from the cfg's input_size when not given


def test_init() -> None:
    model = timm.create_model("cifar_resnet20", num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # Kaiming normal, fan_in, relu gain: std = sqrt(2 / fan_in); layer3 convs have fan_in 64*9
    w = model.layer3[1].conv1.weight
    assert abs(w.std().item() - (2 / (64 * 9)) ** 0.5) < 0.1 * (2 / (64 * 9)) ** 0.5
