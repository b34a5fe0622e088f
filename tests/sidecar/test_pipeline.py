"""Photo -> Gaussians on the tiny preset: preprocessing, stages, progress, cancellation, devices, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sharp_sidecar import errors
from sharp_sidecar.inference.pipeline import STAGES, predict, preprocess, resolve_device, save_prediction
from sharp_sidecar.io import ply
from sharp_sidecar.model import create_predictor


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return create_predictor("tiny")


def _photo(h: int = 60, w: int = 80) -> np.ndarray:
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


def test_preprocess_stretches_with_align_corners() -> None:
    rgb = _photo()
    image, factor = preprocess(rgb, 70.0, 512, torch.device("cpu"))
    assert image.shape == (1, 3, 512, 512) and image.dtype == torch.float32
    # align_corners=True keeps the corner pixels exactly
    torch.testing.assert_close(image[0, :, 0, 0], torch.from_numpy(rgb[0, 0] / 255.0).float())
    torch.testing.assert_close(image[0, :, -1, -1], torch.from_numpy(rgb[-1, -1] / 255.0).float())
    expected = F.interpolate(
        torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255, size=(512, 512), mode="bilinear", align_corners=True
    )
    torch.testing.assert_close(image, expected, rtol=0, atol=0)
    torch.testing.assert_close(factor, torch.tensor([70.0 / 80]))
    with pytest.raises(ValueError, match="uint8"):
        preprocess(rgb.astype(np.float32), 70.0, 512, torch.device("cpu"))


def test_predict_reports_stages_and_timings(tiny: torch.nn.Module, tmp_path: Path) -> None:
    events: list[tuple[str, float | None]] = []
    prediction = predict(tiny, _photo(), 70.0, progress=lambda s, f, m: events.append((s, f)))
    assert [s for s, _ in events] == [*STAGES, "done"]
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert list(prediction.timings) == list(STAGES) and all(t >= 0 for t in prediction.timings.values())
    g = prediction.gaussians
    assert g.means.shape == (1, 2 * 256 * 256, 3) and prediction.image_size == (80, 60)
    assert torch.allclose(g.quaternions.norm(dim=-1), torch.ones(1), atol=1e-6)
    path = tmp_path / "out.ply"
    save_prediction(prediction, path)
    assert "ply" in prediction.timings
    contents = ply.read_ply(path)
    assert len(contents.elements["vertex"]) == 2 * 256 * 256
    assert contents.elements["image_size"]["image_size"].tolist() == [80, 60]


def test_cancel_between_stages(tiny: torch.nn.Module) -> None:
    seen: list[str] = []

    def progress(stage: str, fraction: float | None, message: str) -> None:
        seen.append(stage)

    with pytest.raises(errors.Cancelled, match="decoders"):
        predict(tiny, _photo(), 70.0, progress=progress, cancelled=lambda: seen[-1:] == ["encoder"])
    assert seen == ["resize", "encoder"]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(errors.DeviceError, match="--device cpu"):
            resolve_device("cuda")
        assert resolve_device("auto") != torch.device("cuda")
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        with pytest.raises(errors.DeviceError, match="MPS"):
            resolve_device("mps")
    with pytest.raises(errors.DeviceError, match="unknown device"):
        resolve_device("tpu")


def test_out_of_memory_becomes_a_sharp_error(tiny: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tiny, "encode", boom)
    with pytest.raises(errors.OutOfMemoryError, match="--device cpu") as info:
        predict(tiny, _photo(), 70.0)
    assert info.value.code == errors.OutOfMemoryError.code


def test_tf32_flags_are_restored(tiny: torch.nn.Module) -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    predict(tiny, _photo(), 70.0)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
