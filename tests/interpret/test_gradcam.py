import pytest
import torch
from lightning.pytorch import seed_everything

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.interpret import GradCAM, find_target_layer
from tests.conftest import TINY_BACKBONES, tiny_kwargs, tiny_trainer


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_heatmaps_for_every_architecture_leave_no_trace(backbone):
    torch.manual_seed(0)
    kwargs = tiny_kwargs(backbone, size=64)
    model = ImageClassifier(num_classes=3, freeze_backbone=True, **kwargs)
    model.train()
    modes = {name: m.training for name, m in model.named_modules()}
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())
    with torch.inference_mode():  # as in Trainer.validate: the explanation leaves inference mode itself
        cams = GradCAM(model).generate_cam(torch.randn(3, 3, 64, 64))
    lows, highs = cams.flatten(1).aminmax(dim=1)
    assert cams.shape == (3, 64, 64) and lows.eq(0).all() and highs.eq(1).all()  # min-max scaled, image by image
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == hooks
    assert all(p.grad is None for p in model.parameters())


def test_target_layers_come_from_timm_feature_info():
    assert find_target_layer(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet"))) == "model.layer4"
    vit = ImageClassifier(num_classes=3, **tiny_kwargs("test_vit"))
    assert find_target_layer(vit) == "model.blocks.5.norm1"  # tokens entering the last block, CLS left out


def test_vit_heatmap_is_not_flat():
    torch.manual_seed(0)
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_vit", size=64))
    cams = GradCAM(model).generate_cam(torch.randn(2, 3, 64, 64))
    assert cams.flatten(1).std(dim=1).min() > 0.05


def test_unknown_layer_is_named():
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet"))
    with pytest.raises(ValueError, match=r"Unknown target layer 'model\.layer9'"):
        GradCAM(model, "model.layer9")


@pytest.mark.slow
def test_heatmaps_peak_on_the_object_of_a_trained_model(tmp_path):
    """Train briefly on the shapes set, then check where Grad-CAM peaks against the recorded object boxes.

    test_resnet on 2,000 shapes for 8 epochs reaches about 50% validation accuracy, and its peaks land in the box
    about 2.4 times as often as chance (the bar is 2); resnet10t on 4,000 shapes for 10 epochs took three times as long.
    """
    seed_everything(0)
    size = 48
    data = ImageDataModule(
        dataset="shapes",
        image_size=size,
        crop_pct=1.0,
        batch_size=32,
        scale=(0.6, 1.0),
        auto_augment="none",
        dataset_kwargs={"image_size": size, "num_train": 2000, "num_val": 120},
    )
    model = ImageClassifier(backbone="test_resnet", num_classes=6, pretrained=False, lr=3e-3, warmup_epochs=0.5)
    trainer = tiny_trainer(tmp_path, max_epochs=8, enable_checkpointing=True)
    trainer.fit(model, data)
    # the same weights with a dilated last stage (timm output_stride=8): a 6x6 heatmap instead of 2x2 at 48 px
    weights = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(weights)
    fine = ImageClassifier(
        backbone="test_resnet", num_classes=6, pretrained=str(weights), backbone_kwargs={"output_stride": 8}
    ).eval()
    val = data.datasets["val"]
    images = torch.stack([val[i][0] for i in range(len(val))])
    cams = GradCAM(fine).generate_cam(images)
    hits = 0
    for i in range(len(val)):
        x0, y0, x1, y1 = val.box(i)
        row, col = divmod(int(cams[i].argmax()), size)
        hits += y0 <= row < y1 and x0 <= col < x1
    rate = hits / len(val)
    # a peak dropped at random lands in the box as often as the box covers the image
    chance = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in map(val.box, range(len(val)))) / (len(val) * size**2)
    accuracy = trainer.callback_metrics["val_acc"].item()
    print(
        f"Grad-CAM peak inside the object box: {rate:.0%} of {len(val)} validation images "
        f"(chance {chance:.0%}, val_acc {accuracy:.2f})"
    )
    assert rate > 2 * chance


def test_vit_attention_maps_and_rollout():
    from lightning_cv import ViTClassifier

    torch.manual_seed(0)
    model = ViTClassifier(backbone="test_vit", num_classes=3, pretrained=False, backbone_kwargs={"img_size": 64})
    model.train()
    x = torch.randn(2, 3, 64, 64)
    maps = model.get_attention_maps(x, layer_idx=-1)
    heads, tokens = model.model.blocks[-1].attn.num_heads, 1 + 4 * 4
    assert maps.shape == (2, heads, tokens, tokens)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, heads, tokens))  # rows are softmax distributions
    # independent reference: the attention written out from the block's own qkv projection
    block = model.model.blocks[-1]
    captured = {}
    handle = block.norm1.register_forward_hook(lambda m, a, out: captured.setdefault("x", out))
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    qkv = block.attn.qkv(captured["x"]).reshape(2, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    reference = ((qkv[0] * block.attn.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
    torch.testing.assert_close(maps, reference, rtol=1e-4, atol=1e-5)
    assert block.attn.fused_attn  # the fused kernel is back on
    rollout = model.attention_rollout(x)
    assert rollout.shape == (2, 4, 4) and float(rollout.max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need a timm Vision Transformer"):
        from lightning_cv.interpret import attention_maps

        attention_maps(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), x)


def test_visualize_blends_the_heatmap_over_the_original():
    from PIL import Image

    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet", size=32))
    original = Image.new("RGB", (64, 64), (0, 0, 0))
    picture = GradCAM(model).visualize(torch.randn(3, 32, 32), original, alpha=0.5)
    assert picture.shape == (64, 64, 3) and picture.dtype.name == "uint8" and picture.max() > 0


def test_works_inside_autocast_and_no_grad():
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet", size=32))
    x = torch.randn(2, 3, 32, 32)
    plain = GradCAM(model).generate_cam(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16-mixed validation step
        mixed = GradCAM(model).generate_cam(x)
    torch.testing.assert_close(mixed, plain)  # computed in float32 regardless


def test_half_precision_model():
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet", size=32)).to(torch.bfloat16)
    cams = GradCAM(model).generate_cam(torch.randn(2, 3, 32, 32))
    assert cams.dtype == torch.float32 and cams.shape == (2, 32, 32)
