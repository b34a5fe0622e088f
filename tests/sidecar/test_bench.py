"""`sharp bench`: the reference-weight rule, the error measures, the table, and a tiny CPU smoke run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from sharp_sidecar.cli import bench_reference, bench_table
from sharp_sidecar.cli import main as cli
from sharp_sidecar.gaussians import Gaussians
from sharp_sidecar.model import predictor_from_state_dict


def _make_weights(reference_dir: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_weights", reference_dir / "make_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_tensor_follows_make_weights(reference_dir: Path) -> None:
    make_weights = _make_weights(reference_dir)
    keys = [
        ("monodepth_model.monodepth_predictor.encoder.patch_encoder.pos_embed", (1, 65, 64)),
        ("monodepth_model.monodepth_predictor.encoder.patch_encoder.blocks.0.ls1.gamma", (64,)),
        ("monodepth_model.monodepth_predictor.encoder.patch_encoder.blocks.0.norm1.weight", (64,)),
        ("feature_model.fusion.out_conv.bias", (8,)),
        ("feature_model.fusion.out_conv.weight", (8, 8, 1, 1)),
        ("monodepth_model.monodepth_predictor.head.1.weight", (8, 8, 2, 2)),
    ]
    for key, shape in keys:
        assert torch.equal(bench_reference.reference_tensor(key, shape), make_weights.make_tensor(key, shape)), key


def test_reference_state_dict_loads_strictly() -> None:
    state_dict = bench_reference.reference_state_dict("tiny")
    model = predictor_from_state_dict(state_dict)
    assert model.config.name == "tiny"
    assert not any(k.startswith("depth_alignment.") for k in state_dict)  # never read at inference


def _gaussians(n: int, seed: int) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    quats = torch.nn.functional.normalize(torch.randn(1, n, 4, generator=g), dim=-1)
    return Gaussians(
        torch.rand(1, n, 3, generator=g) + 1, torch.rand(1, n, 3, generator=g) * 0.1 + 0.01, quats,
        torch.rand(1, n, 3, generator=g), torch.rand(1, n, generator=g),
    )  # fmt: skip


def test_relative_errors() -> None:
    ref = _gaussians(500, 0)
    assert all(v == 0 for v in bench_reference.relative_errors(ref, ref).values())
    moved = Gaussians(ref.means * 1.01, *ref._fields()[1:])
    errors = bench_reference.relative_errors(moved, ref)
    assert errors["means"] == pytest.approx(0.01, rel=1e-6)
    assert errors["covariances"] == errors["colors"] == errors["opacities"] == 0
    # Rotating the frame of an anisotropic Gaussian changes its covariance.
    flipped = Gaussians(ref.means, ref.singular_values, ref.quaternions.flip(-1), ref.colors, ref.opacities)
    assert bench_reference.relative_errors(flipped, ref)["covariances"] > 1e-2


def test_bench_needs_cuda_without_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cli.main(["bench", "--device", "cpu"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_bench_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--smoke", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["preset"] == "tiny" and report["runs"] == 1
    assert list(report["paths"]) == ["fp32", "bf16-eager"]  # bf16 without compile off CUDA
    for name, entry in report["paths"].items():
        for stage in bench_table.PHOTO_STAGES:
            assert entry[f"stage_{stage}_s"] > 0, (name, stage)
        assert entry["photo_to_ply_s"] >= entry["photo_to_gaussians_s"] > 0
        assert entry["forward_s"] > 0 and entry["load_s"] > 0 and entry["batch_images_per_s"] > 0
    fast = report["paths"]["bf16-eager"]
    assert 0 < fast["errors"]["means"] < 0.1
    assert fast["render"]["frames"] == 2 and fast["render"]["psnr_min_db"] > 30
    table = capsys.readouterr().out
    assert "photo -> PLY" in table and "bf16-eager" in table and "render PSNR" in table and "images/s" in table


def test_format_table_marks_missing_values() -> None:
    entry = {"load_s": 1.0, "prepare_s": 0.0, "first_call_s": 2.0, "peak_gib": 1.5, "weights_gib": 1.0}
    table = bench_table.format_table({"runs": 5, "paths": {"fp32": {**entry, "forward_s": 0.5}}})
    assert "500.0" in table and "1000.0" in table and "1.50" in table
    assert table.splitlines()[0].startswith("(ms, median of 5)")
