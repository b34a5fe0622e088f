"""State-dict layout equals the checkpoint's TSV; strict loading names the bad keys; preset recognition."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sharp_sidecar.errors import CheckpointError
from sharp_sidecar.model import (
    PRESETS,
    RGBGaussianPredictor,
    config_for_state_dict,
    create_predictor,
    load_into,
    predictor_from_state_dict,
)
from sharp_sidecar.model.config import vit_param_count


def _tsv(reference_dir: Path) -> dict[str, tuple[int, ...]]:
    rows = (reference_dir / "sharp_state_dict_keys.tsv").read_text().splitlines()[1:]
    out = {}
    for row in rows:
        key, shape = row.split("\t")[:2]
        out[key] = tuple(int(s) for s in shape.split("x")) if shape else ()
    return out


@pytest.fixture(scope="module")
def meta_model() -> RGBGaussianPredictor:
    with torch.device("meta"):
        return RGBGaussianPredictor()


def test_state_dict_equals_the_checkpoint_key_list(reference_dir: Path, meta_model: RGBGaussianPredictor) -> None:
    tsv = _tsv(reference_dir)
    ours = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    assert len(tsv) == 1038
    assert sorted(set(tsv) - set(ours)) == [] and sorted(set(ours) - set(tsv)) == []
    assert {k: s for k, s in ours.items() if tsv[k] != s} == {}
    assert list(meta_model.buffers()) == []
    assert sum(v.numel() for v in meta_model.state_dict().values()) == 702_305_169
    assert vit_param_count(PRESETS["default"]) == 326_126_929
    patch = meta_model.monodepth_model.monodepth_predictor.encoder.patch_encoder
    assert sum(p.numel() for p in patch.parameters()) == 326_126_929


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_predictor("tiny").state_dict().items()}


def test_strict_loading_names_missing_unexpected_and_misshaped_keys() -> None:
    sd = _tiny_state_dict()
    model = create_predictor("tiny")
    missing = "feature_model.fusion.out_conv.weight"
    del sd[missing]
    sd["feature_model.extra.weight"] = torch.zeros(1)
    bad = "prediction_head.texture_prediction_head.bias"
    sd[bad] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        load_into(model, sd, source="x.pt")
    message = str(info.value)
    assert missing in message and "feature_model.extra.weight" in message and bad in message
    assert "(3,) != (22,)" in message and "x.pt is not a SHARP checkpoint" in message
    assert "sharp_2572gikvuh.pt" in message


def test_error_lists_a_few_keys_and_the_count() -> None:
    model = create_predictor("tiny")
    with pytest.raises(CheckpointError) as info:
        load_into(model, {f"junk.{i}": torch.zeros(1) for i in range(40)})
    message = str(info.value)
    assert "unexpected keys: 40 (" in message and "and 35 more" in message
    assert "missing keys:" in message


def test_unused_tensors_may_be_absent() -> None:
    sd = _tiny_state_dict()
    dropped = [k for k in sd if k.startswith("depth_alignment.") or (".head." in k and "encoder." in k)]
    assert any(k.endswith("patch_encoder.head.weight") for k in dropped)
    for k in dropped:
        del sd[k]
    model = predictor_from_state_dict(sd)  # builds on the meta device and assigns
    assert not any(p.is_meta for p in model.parameters())
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_preset_recognition_and_round_trip(tmp_path: Path) -> None:
    model = create_predictor("tiny")
    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    assert config_for_state_dict(sd) == PRESETS["tiny"]
    loaded = predictor_from_state_dict(sd)
    assert loaded.config.name == "tiny"
    image = torch.rand(1, 3, 512, 512)
    with torch.no_grad():
        a, b = model(image, torch.tensor([1.0])), loaded(image, torch.tensor([1.0]))
    torch.testing.assert_close(a.means, b.means)
    assert config_for_state_dict({}) is None
    with pytest.raises(CheckpointError, match="matches no known preset"):
        predictor_from_state_dict(
            {"monodepth_model.monodepth_predictor.encoder.patch_encoder.pos_embed": torch.zeros(1, 5, 3)}
        )


def test_default_preset_is_recognised_from_shapes(meta_model: RGBGaussianPredictor) -> None:
    assert config_for_state_dict(meta_model.state_dict()) == PRESETS["default"]
