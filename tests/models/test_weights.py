import pytest
import torch
from safetensors.torch import save_file

from lightning_cv import ImageClassifier
from tests.conftest import make_loader, tiny_trainer


def _source(num_classes=3, backbone="test_resnet"):
    torch.manual_seed(123)
    return ImageClassifier(backbone=backbone, num_classes=num_classes, pretrained=False)


def _assert_backbone_equal(a, b, include_head=True):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for key in sa:
        if include_head or not key.startswith("fc."):
            torch.testing.assert_close(sa[key], sb[key], msg=key)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt", ".bin"])
def test_weights_round_trip(tmp_path, suffix):
    src = _source()
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(999)
    loaded = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=str(path))
    _assert_backbone_equal(src, loaded)


def test_lightning_checkpoint_as_pretrained_with_other_head(tmp_path):
    src = _source(num_classes=5)
    trainer = tiny_trainer(tmp_path, max_steps=1)
    trainer.fit(src, make_loader(num_classes=5))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=ckpt)  # a Path is fine too
    _assert_backbone_equal(src, model, include_head=False)
    assert model.model.fc.weight.shape[0] == 3
    assert model.hparams["pretrained"] == str(ckpt)


def test_file_without_head_loads(tmp_path):
    src = _source()
    state = {k: v for k, v in src.model.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "headless.pth")
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=str(tmp_path / "headless.pth"))
    _assert_backbone_equal(src, model, include_head=False)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Pretrained weights file '.*nope.safetensors' does not exist"):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=str(tmp_path / "nope.safetensors"))


def test_wrong_architecture_names_the_keys(tmp_path):
    src = _source(backbone="test_convnext")
    save_file(dict(src.model.state_dict()), str(tmp_path / "convnext.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit this backbone.*missing keys: bn1.bias.*unexpected keys: "):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=str(tmp_path / "convnext.safetensors"))


def test_shape_mismatch_outside_head_is_named(tmp_path):
    src = _source()
    state = dict(src.model.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"shape mismatch: layer1.0.conv1.weight: file \(1, 1, 1, 1\) vs model"):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=str(tmp_path / "bad.pt"))


class NotWeights:
    pass


def test_arbitrary_pickles_are_refused(tmp_path):
    torch.save({"evil": NotWeights()}, tmp_path / "pickle.pth")
    with pytest.raises(
        ValueError,
        match=r"Refusing .*pickle.pth.*other than tensors \(tests.models.test_weights.NotWeights\).*Re-save",
    ):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=str(tmp_path / "pickle.pth"))
