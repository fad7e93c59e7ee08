import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ImageClassifier
from tests.conftest import TINY_BACKBONES, make_loader, tiny_kwargs, tiny_trainer


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_fit_validate_test_predict_every_architecture(tmp_path, backbone):
    torch.manual_seed(0)
    model = ImageClassifier(num_classes=3, class_names=["a", "b", "c"], lr=3e-3, **tiny_kwargs(backbone))
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, make_loader(), make_loader())
    assert torch.isfinite(trainer.callback_metrics["train_loss_epoch"])
    # independent reference: the last validation ran on the final weights, so counting the eval-mode model's hits
    # on the same 16 images by hand must give the logged accuracy
    images, labels = make_loader().dataset.tensors
    model.eval()
    with torch.no_grad():
        hits = (model(images).argmax(1) == labels).sum().item()
    assert trainer.callback_metrics["val_acc"].item() == pytest.approx(hits / 16)
    assert "test_f1" in trainer.test(model, make_loader(), verbose=False)[0]
    batches = trainer.predict(model, make_loader(num_samples=5, batch_size=4))
    assert len(batches) == 2
    out = batches[0]
    assert out["preds"].shape == (4,) and out["probs"].shape == (4, 3)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(4))
    assert out["class_names"] == [["a", "b", "c"][i] for i in out["preds"].tolist()]


def test_training_learns_the_toy_task(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, lr=0.01, scheduler="constant")
    trainer = tiny_trainer(tmp_path, max_epochs=8)
    trainer.fit(model, make_loader(num_samples=48, shuffle=True), make_loader(num_samples=24, seed=1))
    assert trainer.callback_metrics["val_acc"] >= 0.9


def test_soft_targets_train_with_the_soft_loss(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, label_smoothing=0.1)
    images = torch.randn(8, 3, 32, 32)
    labels = torch.arange(8) % 3
    soft = 0.6 * F.one_hot(labels, 3).float() + 0.4 * F.one_hot((labels + 1) % 3, 3).float()
    model.log = lambda *args, **kwargs: None  # no trainer attached: call the step directly
    loss = model.training_step((images, soft), 0)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    model.train()
    q = soft * 0.9 + 0.1 / 3
    manual = -(q * logits.log_softmax(1)).sum(1).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=0.2)  # train-mode BN vs eval-mode: close, not equal
    assert loss.requires_grad


def test_checkpoint_rebuilds_model_alone_and_loads_weights_only(tmp_path):
    weights = tmp_path / "init.safetensors"
    save_file(
        dict(ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False).model.state_dict()), str(weights)
    )
    model = ImageClassifier(
        backbone="test_resnet",
        num_classes=3,
        pretrained=str(weights),
        class_names=["cat", "dog", "owl"],
        freeze_layers=1,
    )
    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.fit(model, make_loader())
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    weights.unlink()  # the deployment machine has neither the weights file nor internet

    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["hyper_parameters"]["pretrained"] is False
    reloaded = ImageClassifier.load_from_checkpoint(ckpt)
    assert reloaded.hparams["class_names"] == ["cat", "dog", "owl"]
    assert reloaded.num_frozen_groups == 1
    model.eval()
    reloaded.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(reloaded(x), model(x))
    assert reloaded.predict_step(x, 0)["class_names"][0] in {"cat", "dog", "owl"}


def test_bf16_mixed_precision_and_clipping_from_the_trainer(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    trainer = tiny_trainer(tmp_path, max_steps=2, precision="bf16-mixed", gradient_clip_val=0.5)
    trainer.fit(model, make_loader())
    assert trainer.global_step == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_predict_accepts_bare_image_batches(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    loader = DataLoader(torch.randn(6, 3, 32, 32), batch_size=4)
    out = tiny_trainer(tmp_path).predict(model, loader)
    assert [o["preds"].shape[0] for o in out] == [4, 2]
    assert "class_names" not in out[0]


def test_example_input_array_follows_the_backbone():
    model = ImageClassifier(backbone="test_efficientnet", num_classes=3, pretrained=False)
    assert model.example_input_array.shape == (1, 3, 160, 160)
    assert model.data_config.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_classes=1), r"Expected argument `num_classes` to be an integer >= 2, but got 1"),
        (dict(num_classes=3, class_names=["a", "b"]), r"Expected 3 `class_names` \(one per class\), but got 2"),
        (dict(num_classes=3, label_smoothing=1.0), r"`label_smoothing` to be in \[0, 1\), but got 1.0"),
        (dict(num_classes=3, top_k=0), r"`top_k` to be >= 1, but got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifier(backbone="test_resnet", pretrained=False, **kwargs)


def test_bad_batch_is_explained():
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    with pytest.raises(TypeError, match=r"Expected a batch of \(images, targets\)"):
        model.training_step(torch.randn(2, 3, 32, 32), 0)


def test_dict_batches(tmp_path):
    class DictData(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return {"image": x, "label": y}

    data = DictData(torch.randn(8, 3, 32, 32), torch.arange(8) % 3)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    assert "val_acc" in trainer.callback_metrics


def test_channels_last_matches_contiguous_and_keeps_checkpoint_keys(tmp_path):
    torch.manual_seed(0)
    plain = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")).eval()
    fast = ImageClassifier(num_classes=3, channels_last=True, **tiny_kwargs("test_resnet")).eval()
    fast.load_state_dict(plain.state_dict())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fast(images), plain(images), atol=1e-5, rtol=1e-4)
    tiny_trainer(tmp_path, max_steps=2).fit(fast, make_loader())


COMPILED_GRAPHS: list[int] = []


def counting_backend(graph_module, example_inputs):
    """A torch.compile backend that records each graph it is given and runs it as is (module level: picklable)."""
    COMPILED_GRAPHS.append(len(example_inputs))
    return graph_module.forward


def test_compile_wraps_the_backbone_in_place_and_trains(tmp_path):
    COMPILED_GRAPHS.clear()
    model = ImageClassifier(num_classes=3, compile={"backend": counting_backend}, **tiny_kwargs("test_resnet"))
    keys = list(model.state_dict())
    tiny_trainer(tmp_path, max_steps=2).fit(model, make_loader())
    assert COMPILED_GRAPHS, "torch.compile's backend never ran: the backbone was not compiled"
    assert list(model.state_dict()) == keys  # no `_orig_mod.` prefixes: checkpoints load into plain models
    with pytest.raises(TypeError, match="`compile` to be a bool or a dict"):
        ImageClassifier(num_classes=3, compile="yes", **tiny_kwargs("test_resnet"))
