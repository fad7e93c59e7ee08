import socket
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from lightning_cv import EfficientNetClassifier, ImageClassifier, ResNetClassifier, ViTClassifier
from lightning_cv.models.backbone import create_backbone


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet5'\. Did you mean: .*resnet50.*timm has \d+ models"):
        ImageClassifier(backbone="resnet5", num_classes=3, pretrained=False)


def test_pretrained_tag_is_accepted():
    model = ImageClassifier(backbone="test_resnet.r160_in1k", num_classes=3, pretrained=False)
    assert model.hparams["backbone"] == "test_resnet.r160_in1k"


@pytest.mark.parametrize(
    ("cls", "default", "other"),
    [
        (ResNetClassifier, "resnet50", "test_resnet"),
        (ViTClassifier, "vit_small_patch16_224", "test_vit"),
        (EfficientNetClassifier, "efficientnet_b0", "test_efficientnet"),
    ],
)
def test_family_defaults_and_members(cls, default, other):
    assert cls(num_classes=4, pretrained=False).hparams["backbone"] == default
    model = cls(num_classes=4, backbone=other, pretrained=False, freeze_backbone=True)
    assert isinstance(model, ImageClassifier) and model.model.num_classes == 4
    assert model.num_trainable_parameters() == sum(p.numel() for p in model.model.get_classifier().parameters())


def test_family_rejects_other_family():
    with pytest.raises(ValueError, match=r"'test_vit' is a timm model but not of the ResNet family.*ImageClassifier"):
        ResNetClassifier(num_classes=3, backbone="test_vit", pretrained=False)


def test_backbone_kwargs_and_drop_rate_pass_through():
    model = ImageClassifier(
        backbone="test_vit",
        num_classes=3,
        pretrained=False,
        drop_rate=0.25,
        backbone_kwargs={"img_size": 64, "drop_path_rate": 0.1},
    )
    assert model.model.patch_embed.img_size == (64, 64)
    assert model.model.head_drop.p == 0.25
    assert model.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model.data_config.input_size == (3, 64, 64)
    assert model.example_input_array.shape == (1, 3, 64, 64)


def test_reserved_backbone_kwargs_rejected():
    with pytest.raises(ValueError, match=r"`backbone_kwargs` must not contain \['num_classes'\]"):
        create_backbone("test_resnet", num_classes=3, backbone_kwargs={"num_classes": 5})


def test_pretrained_false_makes_no_network_call(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network call attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    model = ImageClassifier(backbone="test_convnext", num_classes=3, pretrained=False)
    assert model.model.num_classes == 3


def _offline_cache(monkeypatch, cache: Path) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))


def test_pretrained_true_offline_explains_the_fix(monkeypatch, tmp_path):
    _offline_cache(monkeypatch, tmp_path / "empty-cache")
    with pytest.raises(
        RuntimeError,
        match=r"(?s)Could not get pretrained weights for backbone 'test_resnet'.*"
        r"pretrained='path/to/test_resnet.safetensors'.*HF_HUB_OFFLINE=1",
    ):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=True)


def test_pretrained_true_loads_from_warm_cache_through_timm(monkeypatch, tmp_path):
    """The real hub path (timm -> huggingface_hub), served from a cache laid out as a download leaves it."""
    source = timm.create_model("test_resnet", pretrained=False)
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    _offline_cache(monkeypatch, tmp_path / "hub")

    model = ImageClassifier(backbone="test_resnet", num_classes=7, pretrained=True)
    loaded = model.model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, msg=key)
    assert loaded["fc.weight"].shape == (7, source.num_features)
