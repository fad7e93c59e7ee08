"""benchmarks/gpu.py: the CPU self-test fills every row, the wrapper passes arguments, and no GPU fails clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
WRAPPER = ROOT / "benchmarks" / "gpu.sh"
TRAIN_PATHS = ("lightning_cv", "plain")
INFER_PATHS = ("eager_fp32", "eager_bf16_channels_last", "onnxruntime")


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)


def load_rows(folder: Path) -> tuple[dict[str, Any], dict[tuple[str, str, bool], dict[str, Any]]]:
    payload = json.loads((folder / "results.json").read_text())
    return payload, {(r["model"], r["path"], r["compile"]): r for r in payload["rows"]}


def assert_measured(row: dict[str, Any]) -> None:
    assert row["status"] == "ok", row
    assert row["images_per_s"] > 0 and row["ratio"] > 0, row
    assert row.get("ms_per_step", 1) > 0 and row.get("latency_bs1_ms", 1) > 0, row


@pytest.mark.slow
def test_self_test_measures_every_model_and_path(tmp_path: Path) -> None:
    result = run([sys.executable, str(SCRIPT), "--self-test", "--output", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload, rows = load_rows(tmp_path)
    assert payload["complete"] and payload["settings"]["device"] == "cpu"
    for model in ("test_resnet", "test_vit"):
        for path in (*TRAIN_PATHS, *INFER_PATHS):
            assert_measured(rows[model, path, False])
        light, plain = rows[model, "lightning_cv", False], rows[model, "plain", False]
        assert light["ratio"] == pytest.approx(light["images_per_s"] / plain["images_per_s"])
        # same seed, data, optimizer and loss: the two training paths compute the same thing
        assert light["final_loss"] == pytest.approx(plain["final_loss"], rel=2e-2)
        assert rows[model, "onnxruntime", False]["export_max_abs_diff"] < 1e-3
    markdown = (tmp_path / "results.md").read_text()
    assert "| Model | Compile | Batch | lightning_cv img/s | plain img/s | ratio lightning_cv / plain" in markdown
    assert "| test_vit | onnxruntime CPU |" in markdown
    assert "failed" not in markdown and "skipped" not in markdown and "Incomplete" not in markdown
    assert "## Training throughput" in result.stdout  # the final table is printed too


@pytest.mark.slow
def test_wrapper_passes_arguments_and_compiles(tmp_path: Path) -> None:
    result = run(
        ["bash", str(WRAPPER), "--self-test", "--compile", "--models", "test_resnet", "--output", str(tmp_path)],
        PYTHON=sys.executable,
        PYTHONPATH="",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload, rows = load_rows(tmp_path)
    assert payload["settings"]["compile"] and payload["settings"]["models"] == ["test_resnet"]
    for path in TRAIN_PATHS:
        assert_measured(rows["test_resnet", path, True])
    assert (tmp_path / "results.md").is_file()


def test_without_cuda_exits_with_a_clear_message(tmp_path: Path) -> None:
    result = run([sys.executable, str(SCRIPT), "--output", str(tmp_path)], CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2
    assert "no CUDA device found" in result.stderr and "--self-test" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results.json").exists()
