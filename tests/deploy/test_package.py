"""`lightning-cv package`: a model folder plain timm loads with the checkpoint's outputs, a card whose figures are
the run's, fine-tuning from a folder, and the refusals (existing folder, bad repo id, no token, hostile folders)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from lightning_cv import ImageClassifier
from lightning_cv.cli import LightningCVCLI, main
from lightning_cv.models.model_folder import read_model_folder
from tests.conftest import TINY_CLI

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]


def card_metadata(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "the card starts with a YAML metadata block"
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="module")
def packaged(cli_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("package") / "my-model"
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out), "--dataset_name", "shapes"]) == 0
    return out


def test_the_folder_loads_in_plain_timm_with_the_checkpoints_outputs(cli_checkpoint, packaged):
    assert sorted(p.name for p in packaged.iterdir()) == [
        "README.md", "config.json", "confusion_matrix.png", "model.safetensors"
    ]  # fmt: skip
    net = timm.create_model(f"local-dir:{packaged}", pretrained=True).eval()
    model = ImageClassifier.load_from_checkpoint(cli_checkpoint, map_location="cpu").eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        difference = (net(x) - model(x)).abs().max().item()
    print(f"timm local-dir vs checkpoint, max abs difference: {difference:.2e}")
    assert difference == 0.0
    cfg = net.pretrained_cfg
    assert cfg["label_names"] == model.hparams.class_names == SHAPES
    data = timm.data.resolve_model_data_config(net)
    trained = model.data_config.override(image_size=32)  # the run trained at 32 px (TINY_CLI)
    assert data["input_size"] == (3, 32, 32) and list(data["mean"]) == list(trained.mean)
    assert list(data["std"]) == list(trained.std) and data["crop_pct"] == trained.crop_pct
    extra = json.loads((packaged / "config.json").read_text())["lightning_cv"]
    assert extra["task"] == "multiclass" and extra["temperature"] == 1.0 and extra["min_confidence"] is None


def test_the_card_gives_the_metrics_of_a_test_run(cli_checkpoint, packaged, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test = LightningCVCLI(args=["test", *TINY_CLI, f"--ckpt_path={cli_checkpoint}"])
    reference = {k: float(v) for k, v in test.trainer.callback_metrics.items()}
    meta = card_metadata(packaged)
    assert meta["library_name"] == "timm" and meta["datasets"] == ["shapes"]
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "test"
    found = {m["type"]: m["value"] for m in results["metrics"]}
    print("card:", found)
    assert found["accuracy"] == pytest.approx(reference["test_acc"], abs=1e-6)
    assert found["f1"] == pytest.approx(reference["test_f1"], abs=1e-6)
    assert found["ece"] == pytest.approx(reference["test_ece"], abs=1e-6)
    text = (packaged / "README.md").read_text()
    assert f"| Top-1 accuracy | {reference['test_acc']:.4f} |" in text
    assert "On the test split (12 images)" in text and "Images per split: train 24, val 12, test 12." in text
    per_class = (Path(test.trainer.log_dir) / "per_class_test.md").read_text()
    assert per_class.strip() in text  # the same per-class table as `lightning-cv test` writes
    assert "![Confusion matrix on the test split](confusion_matrix.png)" in text


def test_a_checkpoint_without_test_data_is_not_evaluated(cli_checkpoint, tmp_path):
    out = tmp_path / "m"
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out), "--no_evaluate"]) == 0
    assert "model-index" not in card_metadata(out)
    assert "Not evaluated: packaged with" in (out / "README.md").read_text()
    assert not (out / "confusion_matrix.png").exists()


def test_the_ema_average_is_what_gets_packaged(cli_checkpoint, tmp_path):
    checkpoint = torch.load(cli_checkpoint, map_location="cpu", weights_only=True)
    average = {k: v + 0.25 if v.is_floating_point() and k.startswith("model.") else v
               for k, v in checkpoint["state_dict"].items()}
    checkpoint["ema_state_dict"] = average
    planted = tmp_path / "ema.ckpt"
    torch.save(checkpoint, planted)
    out = tmp_path / "m"
    assert main(["package", "--ckpt_path", str(planted), "--output", str(out), "--no_evaluate"]) == 0
    weights = load_file(out / "model.safetensors")
    assert torch.equal(weights["fc.weight"], average["model.fc.weight"])
    assert "Weights: the EMA average of the weights" in (out / "README.md").read_text()


def test_an_existing_folder_is_kept_unless_overwrite(cli_checkpoint, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out)]) == 2
    assert "exists and is not empty. Pass `--overwrite`" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out), "--overwrite", "--no_evaluate"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no partial or old folder left beside it


def test_a_failure_midway_leaves_the_output_untouched(cli_checkpoint, tmp_path, monkeypatch):
    from lightning_cv.deploy import model_card

    out = tmp_path / "m"
    out.mkdir()
    (out / "old.txt").write_text("kept")

    def broken(facts):
        raise OSError("disk full")

    monkeypatch.setattr(model_card, "render_model_card", broken)
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out), "--overwrite", "--no_evaluate"]) == 2
    assert [p.name for p in out.iterdir()] == ["old.txt"] and [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.parametrize("repo", ["not a repo", "org/name/extra", "-bad/x"])
def test_an_invalid_repo_id_is_refused_before_any_work(cli_checkpoint, tmp_path, capsys, repo):
    out = tmp_path / "m"
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out), f"--push_to_hub={repo}"]) == 2
    err = capsys.readouterr().err
    assert "is not a valid Hub repository id" in err.splitlines()[0]
    assert not out.exists()


def test_pushing_without_a_token_is_refused_before_any_work(cli_checkpoint, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    out = tmp_path / "m"
    assert main(["package", "--ckpt_path", cli_checkpoint, "--output", str(out), "--push_to_hub", "org/name"]) == 2
    assert "needs a Hugging Face token with write access: set HF_TOKEN" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- fine-tuning from it
def test_image_classifier_fine_tunes_from_the_folder(cli_checkpoint, packaged):
    reference = ImageClassifier.load_from_checkpoint(cli_checkpoint, map_location="cpu").eval()
    x = torch.randn(4, 3, 32, 32)
    same = ImageClassifier(backbone="test_resnet", pretrained=str(packaged), num_classes=6).eval()
    assert same.hparams.class_names == SHAPES  # reused: the classes match
    reordered = list(reversed(SHAPES))
    flipped = ImageClassifier(backbone="test_resnet", pretrained=str(packaged), num_classes=6,
                              class_names=reordered).eval()  # fmt: skip
    other = ImageClassifier(backbone="test_resnet", pretrained=str(packaged), num_classes=6,
                            class_names=[f"c{i}" for i in range(6)]).eval()  # fmt: skip
    with torch.no_grad():
        want = reference(x)
        assert torch.equal(same(x), want)
        assert torch.equal(flipped(x), want.flip(-1))  # each output keeps its class, in the new order
        assert not torch.allclose(other(x), want)  # other classes: a fresh head ...
        assert torch.equal(other.model.forward_features(x), reference.model.forward_features(x))  # ... same body
    bigger = ImageClassifier(backbone="test_resnet", pretrained=str(packaged), num_classes=9)
    assert bigger.model.get_classifier().out_features == 9


def test_a_folder_of_another_architecture_is_refused(packaged):
    with pytest.raises(ValueError, match=r"holds a 'test_resnet', not a 'test_vit': pass `backbone='test_resnet'`"):
        ImageClassifier(backbone="test_vit", pretrained=str(packaged), num_classes=6)


# ---------------------------------------------------------------------------------------------- hostile folders
def _copy(packaged: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("config.json", "model.safetensors"):
        (to / name).write_bytes((packaged / name).read_bytes())
    return to


def test_hostile_model_folders_are_refused_or_read_as_data(packaged, tmp_path):
    import pickle

    pickled = _copy(packaged, tmp_path / "pickled")

    class Payload:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").write_text, ("ran",))

    (pickled / "model.safetensors").write_bytes(pickle.dumps({"fc.weight": Payload()}))
    with pytest.raises(ValueError, match="safetensors"):
        ImageClassifier(backbone="test_resnet", pretrained=str(pickled), num_classes=6)
    assert not (tmp_path / "pwned").exists()

    planted = _copy(packaged, tmp_path / "planted")
    config = json.loads((planted / "config.json").read_text())
    config["label_names"] = [{"class_path": "os.system"}] * 6  # not names: ignored, the data names the classes
    config["lightning_cv"] = {"temperature": float("nan"), "hook": {"class_path": "os.system", "init_args": "ls"}}
    (planted / "config.json").write_text(json.dumps(config))
    folder = read_model_folder(planted)
    assert folder.label_names is None and folder.extra["temperature"] is None
    model = ImageClassifier(backbone="test_resnet", pretrained=str(planted), num_classes=6)
    assert model.hparams.class_names is None

    for name, body, message in [
        ("config.json", "[1, 2]", "not a timm model config"),
        ("config.json", "{not json", "is not JSON"),
        ("config.json", '{"architecture": "test_resnet", "num_classes": -3}', "`num_classes` -3"),
        ("config.json", " " * (4 * 2**20 + 1), "larger than a model config"),
    ]:
        bad = _copy(packaged, tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        (bad / name).write_text(body)
        with pytest.raises(ValueError, match=message):
            read_model_folder(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"is not a model folder: it has no config\.json"):
        ImageClassifier(backbone="test_resnet", pretrained=str(empty), num_classes=6)


def test_a_folder_written_by_timm_itself_fine_tunes(tmp_path):
    """A folder timm's own save_for_hf wrote (no lightning_cv block) fine-tunes as well."""
    from timm.models import save_for_hf

    net = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    save_for_hf(net, str(tmp_path / "timm"), model_config={"label_names": ["a", "b", "c"]}, safe_serialization=True)
    model = ImageClassifier(backbone="test_resnet", pretrained=str(tmp_path / "timm"), num_classes=3).eval()
    assert model.hparams.class_names == ["a", "b", "c"] and read_model_folder(tmp_path / "timm").extra == {}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()(x))
