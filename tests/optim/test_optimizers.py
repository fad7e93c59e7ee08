import functools

import pytest
import torch

from lightning_cv import ImageClassifier
from lightning_cv.optim.optimizers import build_param_groups
from tests.conftest import make_loader, tiny_trainer


def configured_optimizer(tmp_path, **kwargs):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, scheduler="constant", **kwargs)
    trainer = tiny_trainer(tmp_path, max_steps=1)
    trainer.fit(model, make_loader())
    return model, trainer.optimizers[0]


@pytest.mark.parametrize(
    ("name", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizer_by_name(tmp_path, name, cls):
    _, opt = configured_optimizer(tmp_path, optimizer=name, lr=0.02, weight_decay=0.01)
    assert type(opt) is cls
    assert {g["lr"] for g in opt.param_groups} == {0.02}


def test_sgd_momentum_and_nesterov(tmp_path):
    _, opt = configured_optimizer(tmp_path, optimizer="sgd", momentum=0.8, nesterov=True)
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in opt.param_groups)


def test_other_timm_optimizer_and_injected_callable(tmp_path):
    _, opt = configured_optimizer(tmp_path, optimizer="lamb")
    assert type(opt).__name__ == "Lamb"
    model, opt = configured_optimizer(tmp_path, optimizer=functools.partial(torch.optim.RMSprop, lr=0.003))
    assert type(opt) is torch.optim.RMSprop and {g["lr"] for g in opt.param_groups} == {0.003}
    assert "optimizer" not in model.hparams


def test_no_weight_decay_on_norm_and_bias_and_every_parameter_present():
    model = ImageClassifier(
        backbone="test_vit", num_classes=3, pretrained=False, freeze_backbone=True, backbone_kwargs={"img_size": 32}
    )
    groups = build_param_groups(model.model, weight_decay=0.05)
    names = {id(p): n for n, p in model.model.named_parameters()}
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert no_decay | decay == set(names.values())  # frozen parameters are in the optimizer from the start
    assert {"cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"} <= no_decay
    assert {"blocks.0.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"} <= decay
    assert not any(p.requires_grad for n, p in model.model.named_parameters() if n.startswith("blocks"))


def test_layer_decay_scales_learning_rate_by_depth():
    model = ImageClassifier(backbone="test_vit", num_classes=3, pretrained=False, backbone_kwargs={"img_size": 32})
    groups = build_param_groups(model.model, weight_decay=0.05, layer_decay=0.5)
    scale = {
        n: g["lr_scale"] for g in groups for n, p in model.model.named_parameters() if any(p is q for q in g["params"])
    }
    assert scale["head.weight"] == 1.0
    assert scale["blocks.5.mlp.fc1.weight"] == 0.5
    assert scale["blocks.0.mlp.fc1.weight"] == 0.5**6
    assert scale["patch_embed.proj.weight"] == 0.5**7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(optimizer="adamm"), r"Unknown optimizer 'adamm'\. Choose one of sgd, adam, adamw"),
        (dict(lr=0), r"Expected argument `lr` to be > 0, but got 0"),
        (dict(layer_decay=1.5), r"`layer_decay` to be in \(0, 1\] or None, but got 1.5"),
        (dict(warmup_epochs=1, warmup_steps=10), "Give the warmup length once"),
        (dict(optimizer="sgd", momentum=0.0, nesterov=True), "`nesterov=True` needs `momentum` > 0"),
    ],
)
def test_bad_optimizer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, **kwargs)
