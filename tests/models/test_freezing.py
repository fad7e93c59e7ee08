import logging

import pytest
import torch
from lightning.pytorch import Callback

from lightning_cv import ImageClassifier
from lightning_cv.models.freezing import auto_frozen_groups, frozen_groups_at_epoch
from tests.conftest import TINY_BACKBONES, make_loader, tiny_kwargs, tiny_trainer


def group_size(model, group):
    return sum(model.model.get_parameter(n).numel() for n in group.param_names)


def head_size(model):
    return sum(p.numel() for p in model.model.get_classifier().parameters())


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_feature_extraction_trains_only_the_head(backbone):
    model = ImageClassifier(num_classes=3, freeze_backbone=True, **tiny_kwargs(backbone))
    assert model.num_trainable_parameters() == head_size(model)
    trainable = {n for n, p in model.model.named_parameters() if p.requires_grad}
    head = {n for n, _ in model.model.named_parameters() if n.startswith(("fc.", "head.", "classifier."))}
    assert trainable <= head


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_freeze_first_n_groups(backbone):
    full = ImageClassifier(num_classes=3, **tiny_kwargs(backbone))
    model = ImageClassifier(num_classes=3, freeze_layers=2, **tiny_kwargs(backbone))
    assert len(model.layer_groups) >= 4
    frozen = sum(group_size(model, g) for g in model.layer_groups[:2])
    assert model.num_trainable_parameters() == full.num_trainable_parameters() - frozen
    assert model.num_frozen_groups == 2
    first, third = model.layer_groups[0], model.layer_groups[2]
    assert not any(model.model.get_parameter(n).requires_grad for n in first.param_names)
    assert all(model.model.get_parameter(n).requires_grad for n in third.param_names)


def test_groups_cover_every_backbone_parameter_once():
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_vit"))
    names = [n for g in model.layer_groups for n in g.param_names]
    assert len(names) == len(set(names))
    all_names = {n for n, _ in model.model.named_parameters()}
    assert set(names) | {"head.weight", "head.bias"} == all_names


def test_freeze_layers_too_large_says_how_many():
    with pytest.raises(
        ValueError,
        match=r"`freeze_layers=9` is more than the 5 layer groups of 'test_resnet' "
        r"\(conv1, bn1, layer1.0, .*\)\. Use at most 5",
    ):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_layers=9)


def test_describe_freezing_lists_groups():
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_layers=1)
    text = model.describe_freezing()
    assert "1 of 5 frozen" in text
    assert "conv1, bn1" in text.splitlines()[1] and "frozen" in text.splitlines()[1]
    assert f"Trainable parameters: {model.num_trainable_parameters():,}" in text


def test_frozen_batchnorm_statistics_do_not_move(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_layers=2, lr=0.05)
    frozen_bn = model.model.bn1
    trainable_bn = model.model.layer4[0].bn1
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    tiny_trainer(tmp_path, max_steps=4).fit(model, make_loader(num_samples=32))
    after = model.model.state_dict()
    for name in ("bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.bn1.running_mean"):
        torch.testing.assert_close(after[name], before[name], msg=name)
    for name in ("conv1.0.weight", "bn1.weight", "layer1.0.conv1.weight"):
        torch.testing.assert_close(after[name], before[name], msg=name)
    # guards: the same steps do move the statistics and weights of what is not frozen
    assert not torch.equal(after["layer4.0.bn1.running_mean"], before["layer4.0.bn1.running_mean"])
    assert not torch.equal(after["layer4.0.conv1.weight"], before["layer4.0.conv1.weight"])
    model.train()
    assert not frozen_bn.training and trainable_bn.training


def test_frozen_block_agrees_in_train_and_eval_mode():
    torch.manual_seed(0)
    model = ImageClassifier(
        num_classes=3,
        freeze_layers=3,
        backbone_kwargs={"img_size": 32, "drop_path_rate": 0.5},
        backbone="test_vit",
        pretrained=False,
    )
    x = torch.randn(4, 3, 32, 32)
    frozen_block = model.model.blocks[0]
    trainable_block = model.model.blocks[3]
    model.train()
    tokens = torch.randn(4, 17, frozen_block.norm1.normalized_shape[0])
    assert not frozen_block.training and trainable_block.training
    train_out = frozen_block(tokens)
    model.eval()
    torch.testing.assert_close(train_out, frozen_block(tokens))
    model.train()
    assert model(x).shape == (4, 3)


def test_frozen_bn_stays_eval_after_validation(tmp_path):
    seen = []

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((pl_module.model.bn1.training, pl_module.model.layer4[0].bn1.training))

    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_layers=1)
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[Spy()], num_sanity_val_steps=1)
    trainer.fit(model, make_loader(), make_loader())
    assert seen and all(s == (False, True) for s in seen)


@pytest.mark.parametrize(
    ("epoch", "milestones", "expected"),
    [
        (0, [2], 5),
        (1, [2], 5),
        (2, [2], 0),
        (0, [1, 3], 5),
        (1, [1, 3], 2),
        (2, [1, 3], 2),
        (3, [1, 3], 0),
        (5, None, 5),
    ],
)
def test_unfreeze_schedule(epoch, milestones, expected):
    assert frozen_groups_at_epoch(epoch, 5, milestones) == expected


class RecordFreezing(Callback):
    def __init__(self):
        self.frozen: dict[int, int] = {}
        self.trainable: dict[int, int] = {}
        self.groups: dict[int, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        self.frozen[trainer.current_epoch] = pl_module.num_frozen_groups
        self.trainable[trainer.current_epoch] = pl_module.num_trainable_parameters()
        self.groups[trainer.current_epoch] = len(trainer.optimizers[0].param_groups)


def test_gradual_unfreezing_keeps_optimizer_and_trains_thawed_layers(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone="test_resnet",
        num_classes=3,
        pretrained=False,
        freeze_backbone=True,
        unfreeze_milestones=[1, 2],
        lr=0.05,
    )
    before = model.model.conv1[0].weight.detach().clone()
    layer4_before = model.model.layer4[0].conv1.weight.detach().clone()
    rec = RecordFreezing()
    tiny_trainer(tmp_path, max_epochs=3, callbacks=[rec]).fit(model, make_loader())
    assert rec.frozen == {0: 5, 1: 2, 2: 0}
    assert rec.trainable[0] < rec.trainable[1] < rec.trainable[2] == sum(p.numel() for p in model.parameters())
    assert len(set(rec.groups.values())) == 1  # no parameter group added on the way
    assert not torch.equal(model.model.conv1[0].weight, before)
    assert not torch.equal(model.model.layer4[0].conv1.weight, layer4_before)


def test_resume_after_milestone_keeps_backbone_unfrozen(tmp_path):
    torch.manual_seed(0)
    kwargs = dict(
        backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone=True, unfreeze_milestones=[1]
    )
    model = ImageClassifier(**kwargs)
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, make_loader())
    ckpt = tmp_path / "after-milestone.ckpt"
    trainer.save_checkpoint(ckpt)
    assert model.num_frozen_groups == 0

    resumed = ImageClassifier(**kwargs)
    assert resumed.num_frozen_groups == 5
    rec = RecordFreezing()
    tiny_trainer(tmp_path, max_epochs=3, callbacks=[rec]).fit(resumed, make_loader(), ckpt_path=str(ckpt))
    assert rec.frozen == {2: 0}
    assert resumed.num_trainable_parameters() == sum(p.numel() for p in resumed.parameters())
    reloaded = ImageClassifier.load_from_checkpoint(ckpt)
    assert reloaded.num_frozen_groups == 0


@pytest.mark.parametrize(("size", "expected"), [(500, 6), (9_999, 6), (10_000, 3), (100_000, 3), (100_001, 0)])
def test_auto_rule(size, expected):
    assert auto_frozen_groups(size, 6)[0] == expected


def test_auto_policy_is_chosen_at_fit_start_and_logged(tmp_path, caplog):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone="auto")
    rec = RecordFreezing()
    with caplog.at_level(logging.INFO):
        tiny_trainer(tmp_path, max_steps=1, callbacks=[rec]).fit(model, make_loader())
    assert rec.frozen == {0: 5}
    assert "freeze_backbone='auto': 16 training images < 10000: feature extraction" in caplog.text
    assert "Trainable parameters:" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(freeze_backbone=True, freeze_layers=2), "Choose one freezing policy"),
        (dict(unfreeze_milestones=[2]), "`unfreeze_milestones` thaws frozen layers, but nothing is frozen"),
        (dict(freeze_layers=2, unfreeze_milestones=[3, 1]), "increasing epoch numbers >= 0, but got \\[3, 1\\]"),
        (dict(freeze_backbone="yes"), "`freeze_backbone` to be True, False or 'auto'"),
        (dict(freeze_layers=-1), "`freeze_layers` to be >= 0, but got -1"),
    ],
)
def test_bad_freezing_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, **kwargs)


def test_thawed_blocks_train_again_after_a_milestone(tmp_path):
    modes = {}

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes[trainer.current_epoch] = (pl_module.model.bn1.training, pl_module.model.layer4[0].bn1.training)

    model = ImageClassifier(
        backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone=True, unfreeze_milestones=[1]
    )
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[Spy()]).fit(model, make_loader(), make_loader())
    assert modes == {0: (False, False), 1: (True, True)}
