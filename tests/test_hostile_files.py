"""A checkpoint or config from someone else must never run code: planted payloads, every subcommand.

Each gadget below creates a marker file when it is built (the first test proves they are live). They are planted
where jsonargparse would build them: in a checkpoint's saved hyperparameters (which LightningCLI re-parses and
Lightning's ``load_from_checkpoint`` rebuilds through jsonargparse), and in dict-typed options of a YAML config.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from lightning_cv import ImageClassifier
from lightning_cv.cli import LightningCVCLI, main
from tests.conftest import TINY_CLI as TINY

SUBCOMMANDS = ["fit", "validate", "test", "predict", "export", "benchmark", "explain"]
PLACES = ["hyper_parameters.backbone_kwargs", "hyper_parameters.compile", "hyper_parameters.optimizer",
          "datamodule_hyper_parameters.dataset_kwargs"]  # fmt: skip


def gadgets(marker: Path) -> list[dict]:
    """Class specs that create ``marker`` when built. jsonargparse's own denylist knows ``subprocess`` and ``logging``
    but not ``sympy``, and a checkpoint's settings never meet that denylist at all: they are refused by shape."""
    return [
        {"class_path": "sympy.Lambda",
         "init_args": {"signature": f"__import__('pathlib').Path({str(marker)!r}).touch()", "expr": 0}},
        {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}},
        {"class_path": "logging.FileHandler", "init_args": {"filename": str(marker)}},
    ]  # fmt: skip


@pytest.fixture
def checkpoint(cli_checkpoint):
    return cli_checkpoint


@pytest.fixture(autouse=True)
def photos(in_tmp):
    from PIL import Image

    (in_tmp / "photos").mkdir()
    Image.new("RGB", (40, 40), "red").save(in_tmp / "photos" / "a.png")


def plant(checkpoint: Path, place: str, gadget: dict, out: Path) -> Path:
    ckpt = torch.load(checkpoint, weights_only=True)
    section, key = place.split(".")
    ckpt[section][key] = gadget if key in ("compile", "optimizer") else {"x": gadget}
    torch.save(ckpt, out)
    torch.load(out, weights_only=True)  # the planted file passes the pickle check: the danger is elsewhere
    return out


def command(subcommand: str, ckpt: str) -> list[str]:
    if subcommand == "export":
        return ["export", "--ckpt_path", ckpt, "--output", "m.onnx"]
    if subcommand == "benchmark":
        return ["benchmark", "--ckpt_path", ckpt, "--backends", "eager", "--repeats", "1"]
    if subcommand == "explain":
        return ["explain", "--ckpt_path", ckpt, "--images", "photos", "--output", "cams"]
    extra = ["--data.predict_dir=photos"] if subcommand == "predict" else []
    return [subcommand, *TINY, f"--ckpt_path={ckpt}", *extra]


def test_the_gadgets_are_live(tmp_path):
    for gadget in gadgets(tmp_path / "live"):
        module, name = gadget["class_path"].rsplit(".", 1)
        try:
            obj = getattr(importlib.import_module(module), name)(**gadget["init_args"])
            if hasattr(obj, "wait"):
                obj.wait()
        except Exception:  # sympy.Lambda runs the code, then rejects the signature it returned
            pass
        assert (tmp_path / "live").exists(), gadget["class_path"]
        (tmp_path / "live").unlink()


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
@pytest.mark.parametrize("place", PLACES)
def test_class_specs_in_a_checkpoint_never_run(checkpoint, in_tmp, capsys, subcommand, place):
    marker = in_tmp / "PWNED"
    gadget = gadgets(marker)[(SUBCOMMANDS.index(subcommand) + PLACES.index(place)) % 3]
    bad = plant(checkpoint, place, gadget, in_tmp / "shared.ckpt")
    assert main(command(subcommand, str(bad))) == 2
    err = capsys.readouterr().err
    assert "Refusing checkpoint" in err and gadget["class_path"] in err
    assert not marker.exists()
    assert not (in_tmp / "runs").exists() and not (in_tmp / "m.onnx").exists()  # refused before anything started


def test_every_gadget_in_a_checkpoint_is_refused_by_load_from_checkpoint(checkpoint, in_tmp):
    marker = in_tmp / "PWNED"
    for gadget in gadgets(marker):
        bad = plant(checkpoint, "hyper_parameters.backbone_kwargs", gadget, in_tmp / "shared.ckpt")
        with pytest.raises(ValueError, match=r"Refusing checkpoint .* name classes to build .*backbone_kwargs\.x"):
            ImageClassifier.load_from_checkpoint(bad)
        assert not marker.exists()


def test_hparams_file_class_specs_reach_the_constructor_as_data(checkpoint, in_tmp):
    """A YAML ``hparams_file`` bypasses the checkpoint's own settings: still no instantiation."""
    marker = in_tmp / "PWNED"
    hparams = dict(torch.load(checkpoint, weights_only=True)["hyper_parameters"])
    hparams["backbone_kwargs"] = {"x": gadgets(marker)[0]}
    (in_tmp / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    with pytest.raises(ValueError, match=r"`backbone_kwargs` holds a class spec at backbone_kwargs\.x"):
        ImageClassifier.load_from_checkpoint(checkpoint, hparams_file=in_tmp / "hparams.yaml")
    assert not marker.exists()


def test_rebuilding_never_goes_through_the_saved_instantiator(checkpoint, in_tmp, monkeypatch):
    """Old checkpoints carry LightningCLI's ``_instantiator``; only ``trust_checkpoint=True`` uses it."""
    import lightning.pytorch.cli as lcli

    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["hyper_parameters"]["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    torch.save(ckpt, in_tmp / "old.ckpt")
    calls = []
    real = lcli.instantiate_module
    monkeypatch.setattr(lcli, "instantiate_module", lambda cls, config: calls.append(cls) or real(cls, config))
    model = ImageClassifier.load_from_checkpoint(in_tmp / "old.ckpt")
    assert calls == [] and model.hparams["backbone"] == "test_resnet"
    ImageClassifier.load_from_checkpoint(in_tmp / "old.ckpt", trust_checkpoint=True)
    assert calls == [ImageClassifier]
    with pytest.raises(ValueError, match="`weights_only=False` unpickles arbitrary objects"):
        ImageClassifier.load_from_checkpoint(in_tmp / "old.ckpt", weights_only=False)


def test_checkpoints_written_by_the_cli_carry_no_instantiator(checkpoint):
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert "_instantiator" not in hparams and "_class_path" not in hparams


@pytest.mark.parametrize(
    ("subcommand", "key"),
    [("fit", "data.dataset_kwargs"), ("fit", "model.backbone_kwargs"), ("fit", "model.compile"),
     ("validate", "data.dataset_kwargs"), ("test", "data.dataset_kwargs"), ("predict", "data.dataset_kwargs")],
)  # fmt: skip
def test_class_specs_in_a_config_never_run(checkpoint, in_tmp, capsys, subcommand, key):
    marker = in_tmp / "PWNED"
    for gadget in gadgets(marker):
        section, name = key.split(".")
        value = gadget if name == "compile" else {"x": gadget} if section == "model" else {"num_train": 24, "x": gadget}
        (in_tmp / "shared.yaml").write_text(yaml.safe_dump({section: {name: value}}))
        args = command(subcommand, str(checkpoint)) if subcommand != "fit" else ["fit", *TINY]
        # the config comes last so that it, not TINY's dataset_kwargs, holds the value
        assert main([*args, "--trainer.max_epochs=1", "--config", "shared.yaml"]) == 2
        err = capsys.readouterr().err
        assert f"`{name}` holds a class spec" in err, err
        assert not marker.exists()


# ------------------------------------------------------------------ settings that are data but still act
def gadget_compile(marker: Path) -> dict:
    """Inductor runs its `cpp.cxx` setting as a command (split like a shell line): a command in a plain dict."""
    return {"options": {"cpp.cxx": [f"sh -c 'touch {marker}; exec g++ \"$@\"' sh"]}}


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_compile_and_pretrained_never_come_from_a_checkpoint(checkpoint, in_tmp, subcommand):
    """`compile` options could run a command, `pretrained` + a URL overlay would download: neither is taken."""
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["hyper_parameters"]["compile"] = gadget_compile(in_tmp / "PWNED")
    ckpt["hyper_parameters"]["pretrained"] = True  # with the overlay, timm would fetch from this (closed) port
    ckpt["hyper_parameters"]["backbone_kwargs"] = {"pretrained_cfg_overlay": {"url": "http://127.0.0.1:9/w.pth"}}
    torch.save(ckpt, in_tmp / "shared.ckpt")
    assert main(command(subcommand, str(in_tmp / "shared.ckpt"))) == 0
    model = ImageClassifier.load_from_checkpoint(in_tmp / "shared.ckpt")
    assert model.hparams["compile"] is False and model.hparams["pretrained"] is False
    LightningCVCLI(args=["validate", *TINY, "--ckpt_path=shared.ckpt", "--trainer.logger=false"])
    assert not (in_tmp / "PWNED").exists()


def test_compile_options_that_take_text_are_refused(in_tmp, capsys):
    (in_tmp / "shared.yaml").write_text(yaml.safe_dump({"model": {"compile": gadget_compile(in_tmp / "PWNED")}}))
    assert main(["fit", *TINY, "--trainer.max_epochs=1", "--config", "shared.yaml"]) == 2
    assert "`compile['options']` may set switches and numbers only, but 'cpp.cxx'" in capsys.readouterr().err
    assert not (in_tmp / "PWNED").exists()
    switches = {"options": {"max_autotune": True}}
    ImageClassifier(num_classes=3, backbone="test_resnet", pretrained=False, compile=switches)  # accepted


@pytest.mark.parametrize(
    "trainer",
    [
        {"callbacks": [{"class_path": "lightning.pytorch.callbacks.LambdaCallback",
                        "init_args": {"on_fit_start": "GADGET"}}]},
        {"strategy": {"class_path": "lightning.pytorch.strategies.DDPStrategy",
                      "init_args": {"ddp_comm_hook": "GADGET"}}},
    ],
)  # fmt: skip
def test_callables_inside_allowed_classes_cannot_name_other_modules(in_tmp, capsys, trainer):
    marker = in_tmp / "PWNED"
    text = yaml.safe_dump({"trainer": trainer}).replace("GADGET", "{}")
    config = yaml.safe_load(text)
    for gadget in gadgets(marker):
        section = config["trainer"]
        spec = section["callbacks"][0] if "callbacks" in section else section["strategy"]
        key = next(iter(spec["init_args"]))
        spec["init_args"][key] = gadget
        (in_tmp / "shared.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(SystemExit):
            main(["fit", *TINY, "--trainer.max_epochs=1", "--config", "shared.yaml"])
        assert f"'{gadget['class_path']}' may not be imported from a config" in capsys.readouterr().err
        assert not marker.exists()


def test_own_modules_are_allowed_through_the_environment_only(in_tmp, capsys, monkeypatch):
    args = ["fit", *TINY, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.logger=false"]
    callback = "--trainer.callbacks+=tests.cli_plugins.CountingCallback"
    with pytest.raises(SystemExit):
        main([*args, callback])
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "error: `--trainer.callbacks`: 'tests.cli_plugins.CountingCallback' may not be imported from a config: only "
        "lightning.pytorch.accelerators, lightning.pytorch.callbacks, lightning.pytorch.loggers, "
        "lightning.pytorch.plugins, lightning.pytorch.profilers, lightning.pytorch.strategies, "
        "lightning.fabric.plugins, lightning_cv, torch.optim may. To allow a module of your own, set "
        "LIGHTNING_CV_ALLOW_IMPORTS=tests.cli_plugins."
    )
    monkeypatch.setenv("LIGHTNING_CV_ALLOW_IMPORTS", "tests.cli_plugins")
    assert main([*args, callback]) == 0
    from tests.cli_plugins import CountingCallback

    assert CountingCallback.fits == 1


def test_checkpoint_callback_paths_outside_their_folder_are_refused(checkpoint, in_tmp, capsys):
    """Lightning deletes the files a resumed ModelCheckpoint remembers; `..` must not reach yours."""
    victim = in_tmp / "notes.txt"
    victim.write_text("keep me")
    ckpt = torch.load(checkpoint, weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    state["dirpath"] = "runs/lightning_cv/version_0/checkpoints"
    state["last_model_path"] = f"{state['dirpath']}/../../../../notes.txt"
    torch.save(ckpt, in_tmp / "shared.ckpt")
    assert main(["fit", *TINY, "--ckpt_path=shared.ckpt", "--trainer.max_epochs=2"]) == 2
    assert "names files outside its checkpoint folder" in capsys.readouterr().err
    from lightning_cv import ImageDataModule
    from tests.conftest import tiny_trainer

    model = ImageClassifier(num_classes=6, backbone="test_resnet", pretrained=False)
    data = ImageDataModule(image_size=32, batch_size=12, dataset_kwargs={"num_train": 24, "num_val": 12})
    with pytest.raises(ValueError, match="names files outside its checkpoint folder"):
        tiny_trainer(in_tmp, max_epochs=2).fit(model, data, ckpt_path=in_tmp / "shared.ckpt")  # plain Python
    assert victim.read_text() == "keep me"


def test_hparams_file_is_read_as_plain_yaml(checkpoint, in_tmp):
    (in_tmp / "hparams.yaml").write_text("optimizer: !!python/name:os.system\n")
    with pytest.raises(ValueError, match="is not plain YAML"):
        ImageClassifier.load_from_checkpoint(checkpoint, hparams_file=in_tmp / "hparams.yaml")


def test_legacy_hparams_sections_are_checked_too(checkpoint, in_tmp):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["hparams"] = {"backbone_kwargs": {"x": gadgets(in_tmp / "PWNED")[0]}}
    torch.save(ckpt, in_tmp / "shared.ckpt")
    with pytest.raises(ValueError, match="its hparams name classes to build"):
        ImageClassifier.load_from_checkpoint(in_tmp / "shared.ckpt")


def test_a_checkpoint_never_makes_the_deploy_commands_download(checkpoint, in_tmp, capsys):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["datamodule_hyper_parameters"].update(
        dataset="cifar10", download=True, data_dir=str(in_tmp / "downloads"), dataset_kwargs=None
    )
    torch.save(ckpt, in_tmp / "shared.ckpt")
    assert main(["export", "--ckpt_path", "shared.ckpt", "--output", "m.onnx"]) == 0
    assert "Note: no accuracy check (CIFAR10 is not in" in capsys.readouterr().out
    assert not (in_tmp / "downloads").exists()
