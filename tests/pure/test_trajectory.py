"""The reference camera paths (spec §9) against the reference npz, and their geometry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sharp_blender.io import trajectory as tr

REFERENCES = ("synth_640x480", "photo_exif")


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_trajectory_matches_npz(name: str, reference_npz) -> None:  # type: ignore[no-untyped-def]
    ref = reference_npz(name)
    wh = (int(ref["image_wh"][0]), int(ref["image_wh"][1]))
    traj = tr.reference_trajectory(ref["traj_depth_quantiles"], wh, float(ref["f_px"]))
    assert traj.num_frames == 60 and traj.params.type == "rotate_forward"
    assert (traj.width, traj.height) == tuple(int(v) for v in ref["traj_render_wh"])
    assert traj.viewmats.dtype == np.float32 and traj.viewmats.shape == (60, 4, 4)
    assert np.abs(traj.viewmats - ref["traj_viewmats"]).max() <= 1e-5
    np.testing.assert_allclose(traj.eyes, ref["traj_eyes"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(traj.K, ref["traj_K"], rtol=1e-6)
    offsets = tr.max_offsets(wh, float(np.float32(ref["f_px"])), float(ref["traj_depth_quantiles"][0]))
    np.testing.assert_allclose(offsets, ref["traj_max_offset"], rtol=1e-6)
    assert float(np.float32(ref["f_px"])) == float(ref["traj_focal_px"])


@pytest.mark.parametrize("name", REFERENCES)
def test_depth_quantile_rule_matches_the_full_scene_stats(name: str, reference_npz) -> None:  # type: ignore[no-untyped-def]
    # metric_means_stats holds numpy linear-interpolation quantiles of all N depths (all positive here),
    # the same rule depth_quantiles applies; the trajectory's own quantiles come from torch.quantile.
    ref = reference_npz(name)
    columns = [str(c) for c in ref["stats_columns"]]
    z_stats = ref["metric_means_stats"][2]
    assert z_stats[columns.index("min")] > 0
    from_stats = z_stats[[columns.index(c) for c in ("q0.001", "q0.1", "q0.999")]]
    np.testing.assert_allclose(from_stats, ref["traj_depth_quantiles"], rtol=1e-6)


def test_depth_quantiles_ignore_points_behind_and_interpolate_linearly() -> None:
    z = np.concatenate([np.arange(1, 1002, dtype=np.float32), -np.ones(500, np.float32), np.zeros(7, np.float32)])
    np.random.default_rng(1).shuffle(z)
    q = tr.depth_quantiles(z)
    # 1001 sorted values 1..1001: position p·1000, linearly interpolated.
    np.testing.assert_allclose(q, [1 + 0.001 * 1000, 1 + 0.1 * 1000, 1 + 0.999 * 1000], rtol=1e-6)
    with pytest.raises(ValueError, match="no positive depth"):
        tr.depth_quantiles(np.array([-1.0, 0.0]))


OFFSETS = (0.3, 0.25, 0.4)


def test_swipe_is_a_repeated_lateral_line() -> None:
    params = tr.TrajectoryParams(type="swipe", num_steps=11, num_repeats=2, distance_m=0.5)
    eyes = tr.eye_positions(params, OFFSETS)
    assert eyes.shape == (22, 3)
    np.testing.assert_allclose(eyes[:11, 0], np.linspace(-0.3, 0.3, 11), atol=1e-7)
    np.testing.assert_array_equal(eyes[:11], eyes[11:])
    assert np.all(eyes[:, 1] == 0) and np.all(eyes[:, 2] == np.float32(0.5))


def test_shake_moves_x_then_y() -> None:
    params = tr.TrajectoryParams(type="shake", num_steps=9)
    eyes = tr.eye_positions(params, OFFSETS)
    half = 4
    np.testing.assert_allclose(eyes[:half, 0], 0.3 * np.sin(2 * np.pi * np.linspace(0, 1, half)), atol=1e-6)
    assert np.all(eyes[:half, 1] == 0) and np.all(eyes[half:, 0] == 0)
    np.testing.assert_allclose(eyes[half:, 1], 0.25 * np.sin(2 * np.pi * np.linspace(0, 1, 9 - half)), atol=1e-6)


def test_rotate_is_an_ellipse_and_rotate_forward_zooms_in() -> None:
    eyes = tr.eye_positions(tr.TrajectoryParams(type="rotate", num_steps=40), OFFSETS)
    np.testing.assert_allclose((eyes[:, 0] / 0.3) ** 2 + (eyes[:, 1] / 0.25) ** 2, 1.0, atol=1e-5)
    forward = tr.eye_positions(tr.TrajectoryParams(num_steps=41), OFFSETS)
    assert np.all(forward[:, 1] == 0)
    assert forward[:, 2].min() == 0 and abs(forward[20, 2] - 0.4) < 1e-6  # furthest in halfway round


@pytest.mark.parametrize("kind", tr.TRAJECTORY_TYPES)
def test_every_camera_looks_at_the_target_upright(kind: str) -> None:
    params = tr.TrajectoryParams(type=kind, num_steps=30, num_repeats=2)
    traj = tr.reference_trajectory([1.5, 3.0, 50.0], (800, 600), 700.0, params)
    assert traj.viewmats.shape == (60, 4, 4)
    R = traj.viewmats[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)
    target_cam = np.einsum("tij,j->ti", traj.viewmats, np.append(traj.target, 1.0).astype(np.float32))
    np.testing.assert_allclose(target_cam[:, :2], 0.0, atol=1e-5)
    assert np.all(target_cam[:, 2] > 0)
    eye_cam = np.einsum("tij,tj->ti", traj.viewmats, np.hstack([traj.eyes, np.ones((60, 1), np.float32)]))
    np.testing.assert_allclose(eye_cam[:, :3], 0.0, atol=1e-6)
    # Image "down" (camera +y) keeps pointing along world +y (OpenCV down): no roll.
    assert np.all(R[:, 1, 1] > 0.9)
    # The focus target is max(2, q0.1) = 3 here.
    assert traj.target[2] == np.float32(3.0)


def test_focus_distance_has_a_two_metre_floor() -> None:
    traj = tr.reference_trajectory([0.5, 1.0, 3.0], (640, 480), 500.0)
    assert traj.target.tolist() == [0.0, 0.0, 2.0]


def test_render_resolution_and_intrinsics() -> None:
    assert tr.render_resolution((640, 480)) == (640, 480)
    assert tr.render_resolution((641, 479)) == (642, 480)
    assert tr.render_resolution((4033, 6001)) == (2016, 3000)
    assert tr.render_resolution((4000, 3001)) == (2000, 1500)
    K = tr.render_intrinsics(1000.0, (641, 479), (642, 480))
    np.testing.assert_allclose(K[0], [1000 * 642 / 641, 0, 320 * 642 / 641], rtol=1e-6)
    np.testing.assert_allclose(K[1], [0, 1000 * 480 / 479, 239 * 480 / 479], rtol=1e-6)
    np.testing.assert_array_equal(K[2], [0, 0, 1])
    np.testing.assert_allclose(tr.scale_intrinsics(K, (642, 480), (321, 240)), K * [[0.5], [0.5], [1]], rtol=1e-6)


def test_blender_camera_round_trip() -> None:
    traj = tr.reference_trajectory([1.5, 3.0, 50.0], (800, 600), 700.0, tr.TrajectoryParams(type="rotate"))
    # Identity view: a Blender camera at the origin with the local axes flipped about x.
    np.testing.assert_array_equal(tr.camera_worlds_from_viewmats(np.eye(4)[None])[0], np.diag([1.0, -1, -1, 1]))
    splat = np.array([[1, 0, 0, 2], [0, 0, -1, 3], [0, 1, 0, 4], [0, 0, 0, 1]], dtype=np.float64)  # Rx(90°) + t
    cams = tr.camera_worlds_from_viewmats(traj.viewmats, splat)
    back = tr.viewmats_from_camera_worlds(cams, splat)
    np.testing.assert_allclose(back, traj.viewmats, atol=1e-6)
    # The Blender camera looks down its local -z: the target must be in front of it.
    target_world = splat @ np.append(traj.target, 1.0)
    local = np.linalg.inv(cams) @ target_world
    assert np.all(local[:, 2] < 0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown trajectory"):
        tr.TrajectoryParams(type="zoom")
    with pytest.raises(ValueError, match=">= 1"):
        tr.TrajectoryParams(num_steps=0)


def test_imports_without_bpy_or_torch() -> None:
    code = "import sys; sys.modules['bpy'] = None; sys.modules['torch'] = None\nimport sharp_blender.io.trajectory\n"
    subprocess.run([sys.executable, "-c", code], check=True)
