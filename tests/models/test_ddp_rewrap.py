"""`rewrap_ddp` calls two private methods of Lightning's DDP strategy: this fails first if Lightning changes them."""

import inspect

from lightning.pytorch.strategies import DDPStrategy

from lightning_cv.models.ddp_rewrap import rewrap_ddp


def test_lightning_still_has_what_rewrap_ddp_calls():
    setup_model = getattr(DDPStrategy, "_setup_model", None)
    register = getattr(DDPStrategy, "_register_ddp_hooks", None)
    assert callable(setup_model) and list(inspect.signature(setup_model).parameters) == ["self", "model"]
    assert callable(register) and list(inspect.signature(register).parameters) == ["self"]


def test_rewrap_is_a_no_op_without_ddp():
    from lightning_cv import ImageClassifier
    from tests.conftest import tiny_kwargs

    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet"))
    rewrap_ddp(model)  # no trainer, no strategy: nothing to re-wrap, nothing raised
