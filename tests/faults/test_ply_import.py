"""PLY import (no bpy): malformed files end in PlyError naming the file and the problem; NaN / infinite splats are
dropped and counted, never reaching the origin; NaN intrinsics give no camera; property names Blender or the add-on
use are kept under a safe name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sharp_blender import native_attributes, placement, splat
from sharp_blender.io import ply

N = 50


def _columns(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    cols = {name: rng.normal(size=n).astype(np.float32) for name in ply.SHARP_VERTEX_PROPERTIES}
    cols["z"] = (2.0 + rng.random(n)).astype(np.float32)
    return cols


def _write(path: Path, cols: dict[str, np.ndarray], metadata: bool = True, **meta: object) -> Path:
    n = len(next(iter(cols.values())))
    extra = ply.sharp_metadata(float(meta.get("f", 100.0)), (40, 30), n, [0.1, 1.0]) if metadata else []  # type: ignore[arg-type]
    ply.write_ply(path, ply.structured(cols), extra)
    return path


def _header_file(path: Path, header: str, body: bytes = b"") -> Path:
    path.write_bytes(header.encode("ascii") + body)
    return path


def _props(names: list[str], kind: str = "float") -> str:
    return "".join(f"property {kind} {n}\n" for n in names)


MALFORMED: dict[str, tuple[str, bytes, str]] = {
    "zero-vertices": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 0\n" + _props(list(ply.SHARP_VERTEX_PROPERTIES)),
        b"",
        "no splats",
    ),
    "duplicate-property": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 1\n" + _props([*ply.SHARP_VERTEX_PROPERTIES, "x"]),
        b"\0" * 60,
        "two properties named 'x'",
    ),
    "ascii": ("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", b"1\n", "ascii"),
    "no-magic": ("PLY?\nend_header\n", b"", "not a PLY file"),
    "no-end-header": ("ply\nformat binary_little_endian 1.0\nelement vertex 1\n", b"", "not a PLY file"),
    "truncated": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 10\n" + _props(list(ply.SHARP_VERTEX_PROPERTIES)),
        b"\0" * 100,
        "truncated",
    ),
    "unknown-type": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float128 x\n",
        b"",
        "unknown property type",
    ),
    "missing-gaussian-properties": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 1\n" + _props(["x", "y", "z"]),
        b"\0" * 12,
        "ordinary point cloud or mesh \\(no opacity, scales or rotations\\); import it with File > Import > Stanford PLY",
    ),
    "list-vertex": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty list uchar int idx\n",
        b"\x00",
        "no readable 'vertex'",
    ),
    "bad-element-line": ("ply\nformat binary_little_endian 1.0\nelement vertex many\n", b"", "not valid PLY"),
    "u4-overflow": (
        "ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
        + _props(list(ply.SHARP_VERTEX_PROPERTIES))
        + "property uint big\n",
        b"\0" * 56 + b"\xff\xff\xff\xff",
        "2\\*\\*31",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_ply_is_a_ply_error_naming_the_file(tmp_path: Path, case: str) -> None:
    header, body, problem = MALFORMED[case]
    if "end_header" not in header and case != "no-end-header":
        header += "end_header\n"
    path = _header_file(tmp_path / f"{case}.ply", header, body)
    before = path.read_bytes()
    with pytest.raises(ply.PlyError, match=problem) as info:
        splat.read(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before  # reading never touches the file
    good = splat.read(_write(tmp_path / "good.ply", _columns()))  # the next file still reads
    assert good.count == N


@pytest.mark.parametrize("prop", ply.SHARP_VERTEX_PROPERTIES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_splats_are_dropped_counted_and_never_used_for_the_origin(
    tmp_path: Path, prop: str, bad: float
) -> None:
    cols = _columns()
    cols[prop][[3, 7]] = bad
    arrays = splat.read(_write(tmp_path / "nan.ply", cols))
    assert arrays.count == N - 2 and arrays.dropped == 2
    assert any("2 of 50 splats" in w for w in arrays.warnings)
    assert all(np.isfinite(v).all() for v in arrays.columns.values())
    assert all(len(values) == N - 2 for _, _, values in arrays.properties)
    origin = placement.scene_centre(arrays.means_cv)
    assert np.isfinite(origin).all()
    derived = splat.derive(arrays)
    assert np.isfinite(derived.col).all() and np.isfinite(derived.rotation).all()


def test_a_ply_of_only_nan_splats_is_refused(tmp_path: Path) -> None:
    cols = _columns()
    cols["x"][:] = np.nan
    path = _write(tmp_path / "allnan.ply", cols)
    with pytest.raises(ply.PlyError, match="every one of its 50 splats") as info:
        splat.read(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("f", [float("nan"), float("inf"), 0.0, -100.0])
def test_unusable_intrinsics_give_no_camera_and_a_warning(tmp_path: Path, f: float) -> None:
    arrays = splat.read(_write(tmp_path / "k.ply", _columns(), f=f))
    assert arrays.camera is None
    assert any("intrinsics are unusable" in w for w in arrays.warnings)
    assert arrays.count == N  # the splats themselves are fine


RESERVED = ["position", "Col", "scale", "rotation", "id", "material_index", "sharp_face", "radiance:base", ".select_vert", ".hidden", "ply:x", "UVMap"]  # fmt: skip


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_property_names_are_kept_under_a_prefixed_name(tmp_path: Path, name: str) -> None:
    cols = _columns()
    cols[name] = np.arange(N, dtype=np.float32)
    arrays = splat.read(_write(tmp_path / "r.ply", cols))
    attributes = [a for a, _, _ in arrays.properties]
    assert name not in attributes
    safe = next(a for a in attributes if a not in cols)
    assert safe.startswith(splat.RENAMED_PREFIX) or safe.startswith("_")
    assert arrays.ply_names == {safe: name}
    np.testing.assert_array_equal(dict((a, v) for a, _, v in arrays.properties)[safe], cols[name])
    assert any(name in w for w in arrays.warnings)


def test_long_property_names_are_shortened_uniquely(tmp_path: Path) -> None:
    cols = _columns()
    long_a, long_b = "a" * 68 + "_one", "a" * 68 + "_two"
    cols[long_a] = np.zeros(N, np.float32)
    cols[long_b] = np.ones(N, np.float32)
    arrays = splat.read(_write(tmp_path / "long.ply", cols))
    renamed = {v: k for k, v in arrays.ply_names.items()}
    assert set(renamed) == {long_a, long_b} and renamed[long_a] != renamed[long_b]
    assert all(len(a.encode()) <= splat.MAX_ATTRIBUTE_BYTES for a, _, _ in arrays.properties)


def test_attribute_names_never_collide_with_existing_properties() -> None:
    names = ["position", "ply:position", "x"]
    renamed = splat.attribute_names(names)
    assert set(renamed) == {"position", "ply:position"}
    assert len(set(renamed.values()) | {"x"}) == 3 and not set(renamed.values()) & set(names)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_unchecked_rows_are_checked_in_the_native_attribute_pass(tmp_path: Path, bad: float) -> None:
    cols = _columns()
    cols["scale_1"][[3, 40]] = bad  # -inf: exp() gives a finite 0, so only the row check can catch it
    path = _write(tmp_path / "nan.ply", cols)
    arrays = splat.read(path, check_finite=False)
    assert arrays.unchecked and arrays.count == N and arrays.dropped == 0
    with pytest.raises(splat.NonFiniteRows):
        native_attributes.cloud_attributes(arrays, np.zeros(3))
    checked = arrays.finite()
    assert not checked.unchecked and checked.count == N - 2 and checked.dropped == 2
    assert "2 of 50 splats" in checked.warnings[0]
    eager = splat.read(path)  # the default: checked while reading
    assert (eager.count, eager.dropped) == (checked.count, checked.dropped)
    origin = placement.scene_centre(checked.means_cv)
    np.testing.assert_array_equal(origin, placement.scene_centre(eager.means_cv))
    ours = native_attributes.cloud_attributes(checked, origin)
    theirs = native_attributes.cloud_attributes(eager, origin)
    for a, b in zip(ours, theirs, strict=True):
        assert a.name == b.name and np.isfinite(a.values).all()
        np.testing.assert_array_equal(a.values, b.values, err_msg=a.name)


def test_unchecked_clean_rows_need_no_second_look(tmp_path: Path) -> None:
    arrays = splat.read(_write(tmp_path / "ok.ply", _columns()), check_finite=False)
    assert arrays.unchecked
    assert len(native_attributes.cloud_attributes(arrays, np.zeros(3))) == 12
    assert arrays.finite().count == N


def test_unchecked_rows_all_nan_are_refused(tmp_path: Path) -> None:
    cols = _columns()
    cols["opacity"][:] = np.nan
    path = _write(tmp_path / "allnan.ply", cols)
    arrays = splat.read(path, check_finite=False)
    with pytest.raises(ply.PlyError, match="every one of its 50 splats") as info:
        arrays.finite()
    assert str(path) in str(info.value)
