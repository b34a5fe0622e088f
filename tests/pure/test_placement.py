"""sharp_blender.placement: camera maths, placement and baking, checked against plain projections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sharp_blender import placement as pl


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return np.array(
        [
            [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
        ]
    )


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@pytest.mark.parametrize(
    "K, size",
    [
        ([[1000, 0, 960], [0, 1000, 540], [0, 0, 1]], (1920, 1080)),
        ([[800, 0, 300], [0, 800, 410], [0, 0, 1]], (600, 800)),
        ([[900, 0, 500], [0, 700, 260], [0, 0, 1]], (1000, 500)),  # fx > fy
        ([[600, 0, 310], [0, 750, 240], [0, 0, 1]], (640, 480)),  # fy > fx
    ],
)
def test_camera_settings_round_trip(K: list[list[float]], size: tuple[int, int]) -> None:
    cam = pl.camera_settings(np.array(K, float), size)
    assert min(cam.pixel_aspect_x, cam.pixel_aspect_y) == 1.0 and max(cam.pixel_aspect_x, cam.pixel_aspect_y) >= 1
    back = pl.intrinsics(
        cam.lens,
        cam.sensor_width,
        24.0,
        cam.sensor_fit,
        cam.shift_x,
        cam.shift_y,
        (cam.resolution_x, cam.resolution_y),
        (cam.pixel_aspect_x, cam.pixel_aspect_y),
    )
    np.testing.assert_allclose(back, K, rtol=1e-12, atol=1e-9)


def test_sharp_camera_has_no_shift_and_the_notes_lens() -> None:
    f, W, H = 1234.5, 1536, 1024
    cam = pl.camera_settings(np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]), (W, H))
    assert cam.shift_x == 0 and cam.shift_y == 0
    assert cam.lens == pytest.approx(f * 36 / max(W, H))


def test_horizontal_and_vertical_fits() -> None:
    # 50 mm on a 36 x 24 sensor, 1000 x 500 image: horizontal fit -> f = 50/36 * 1000 px.
    K = pl.intrinsics(50, 36, 24, "HORIZONTAL", 0.1, -0.05, (1000, 500))
    assert K[0, 0] == pytest.approx(50 / 36 * 1000) and K[1, 1] == pytest.approx(K[0, 0])
    assert K[0, 2] == pytest.approx(500 - 0.1 * 1000) and K[1, 2] == pytest.approx(250 - 0.05 * 1000)
    K = pl.intrinsics(50, 36, 24, "VERTICAL", 0.0, 0.0, (1000, 500))
    assert K[1, 1] == pytest.approx(50 / 24 * 500)


def test_placement_projects_opencv_points_through_the_camera() -> None:
    """World points of the placed object, seen by the camera matrix, project back with K (OpenCV)."""
    rng = np.random.default_rng(1)
    p_cv = rng.uniform([-1, -1, 0.5], [1, 1, 5], (100, 3))
    centre = pl.scene_centre(p_cv)
    camera = pl.default_camera_matrix((0.3, -2.0, 1.0))
    obj = pl.splat_matrix(camera, centre)
    local = np.c_[p_cv - centre, np.ones(len(p_cv))]
    world = local @ obj.T
    # The camera looks along +Y and up is +Z: depth = world y - camera y.
    np.testing.assert_allclose(world[:, 1] - (-2.0), p_cv[:, 2], atol=1e-12)
    np.testing.assert_allclose(world[:, 2] - 1.0, -p_cv[:, 1], atol=1e-12)
    # View matrix: object-local -> OpenCV camera recovers the source points.
    view = pl.view_matrix(camera, obj)
    np.testing.assert_allclose((local @ view.T)[:, :3], p_cv, atol=1e-12)
    # The object's origin is the scene centre in world space.
    np.testing.assert_allclose(obj[:3, 3], (np.r_[centre, 1] @ pl.splat_matrix(camera).T)[:3], atol=1e-12)


def test_flip_is_a_proper_rotation() -> None:
    assert np.linalg.det(pl.FLIP[:3, :3]) == pytest.approx(1.0)


def test_quaternion_multiply_matches_matrix_product() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 50, 4))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    ab = pl.quaternion_multiply(a, b)
    for i in range(0, 50, 7):
        np.testing.assert_allclose(_quat_to_matrix(ab[i]), _quat_to_matrix(a[i]) @ _quat_to_matrix(b[i]), atol=1e-12)


@pytest.mark.parametrize(
    "axis, angle", [((1, 0, 0), 0.3), ((0, 1, 1), 2.9), ((1, -2, 0.5), math.pi), ((0, 0, 1), -1.0)]
)
def test_matrix_to_quaternion(axis: tuple[float, ...], angle: float) -> None:
    R = _rotation(np.array(axis, float), angle)
    q = pl.matrix_to_quaternion(R)
    np.testing.assert_allclose(_quat_to_matrix(q), R, atol=1e-12)


def test_bake_transform_moves_covariances_like_the_matrix() -> None:
    rng = np.random.default_rng(3)
    n = 20
    means = rng.normal(size=(n, 3))
    quats = rng.normal(size=(n, 4))
    log_scales = rng.normal(size=(n, 3)) - 2
    R = _rotation(np.array([0.2, 1.0, -0.4]), 1.1)
    s = 2.5
    M = np.eye(4)
    M[:3, :3] = s * R
    M[:3, 3] = (1.0, -2.0, 3.0)
    m2, q2, ls2 = pl.bake_transform(M, means, quats, log_scales)
    np.testing.assert_allclose(m2, means @ (s * R).T + M[:3, 3], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(ls2, log_scales + math.log(s), rtol=1e-6, atol=1e-6)
    for i in range(n):
        # Covariance transforms as A Σ Aᵀ with A = sR.
        S = np.diag(np.exp(log_scales[i]))
        Rq = _quat_to_matrix(quats[i])
        cov = Rq @ S @ S @ Rq.T
        S2 = np.diag(np.exp(ls2[i].astype(np.float64)))
        R2 = _quat_to_matrix(q2[i].astype(np.float64))
        np.testing.assert_allclose(R2 @ S2 @ S2 @ R2.T, (s * R) @ cov @ (s * R).T, rtol=2e-5, atol=1e-7)


def test_bake_refuses_non_uniform_scale_and_mirrors() -> None:
    zeros = np.zeros((1, 3))
    with pytest.raises(pl.TransformError, match="non-uniform"):
        pl.bake_transform(np.diag([1.0, 2.0, 1.0, 1.0]), zeros, np.array([[1.0, 0, 0, 0]]), zeros)
    with pytest.raises(pl.TransformError, match="mirrored"):
        pl.bake_transform(np.diag([-1.0, 1.0, 1.0, 1.0]), zeros, np.array([[1.0, 0, 0, 0]]), zeros)


def test_scene_centre_is_a_median() -> None:
    pts = np.array([[0, 0, 1], [0, 0, 2], [0, 0, 3], [10, 10, 100]], float)
    np.testing.assert_allclose(pl.scene_centre(pts), [0, 0, 2.5])
    assert pl.scene_centre(np.zeros((0, 3))).shape == (3,)
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 1000):  # all points: exactly numpy's median, even and odd counts
        p = rng.normal(size=(n, 3)).astype(np.float32)
        np.testing.assert_array_equal(pl.scene_centre(p), np.median(p.astype(np.float64), axis=0))


def test_scene_centre_of_many_splats_samples_the_whole_cloud() -> None:
    n = 300_000
    rows = np.zeros((n, 14), np.float32)  # a strided view of PLY rows, as the importer passes it
    rows[:, :3] = np.random.default_rng(6).normal([1.0, -2.0, 5.0], 1.0, (n, 3))
    rows[:, 2] += np.linspace(-3, 3, n)  # a trend along the file: the sample must span it
    centre = pl.scene_centre(rows[:, :3], max_samples=8192)
    np.testing.assert_allclose(centre, np.median(rows[:, :3], axis=0), atol=0.05)


def _rigid(rng: np.random.Generator) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _rotation(rng.normal(size=3), rng.uniform(-3, 3))
    m[:3, 3] = rng.normal(size=3)
    return m


def test_origin_frame_maps_ply_axes_to_blender_z_up() -> None:
    np.testing.assert_allclose(pl.ORIGIN_FRAME[:3, :3] @ [1.0, 2.0, 3.0], [1.0, 3.0, -2.0], atol=1e-12)


def test_untouched_import_exports_through_an_identity_change() -> None:
    rng = np.random.default_rng(2)
    cursor = _rigid(rng)
    origin = rng.normal(size=3)
    poses = pl.import_poses(cursor @ pl.default_camera_matrix(), _rigid(rng), origin)
    maps = pl.export_maps(poses.frame, poses.splat, origin)
    np.testing.assert_allclose(maps.change, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(maps.to_file, pl.translation(origin), atol=1e-12)


def test_camera_from_extrinsic_sees_the_file_points_where_the_extrinsic_says() -> None:
    rng = np.random.default_rng(3)
    E = _rigid(rng)
    poses = pl.import_poses(pl.default_camera_matrix(), E)
    points = rng.normal(size=(20, 3))
    world = points @ poses.frame[:3, :3].T + poses.frame[:3, 3]
    # Blender camera local = FLIP · OpenCV camera; so OpenCV camera = FLIP · inverse(camera) · world
    cv = (pl.FLIP @ np.linalg.inv(poses.camera) @ np.c_[world, np.ones(20)].T).T[:, :3]
    np.testing.assert_allclose(cv, points @ E[:3, :3].T + E[:3, 3], atol=1e-12)
    # SHARP's identity extrinsic puts the camera exactly where placement says, as before
    np.testing.assert_allclose(pl.import_poses(pl.default_camera_matrix()).camera, pl.default_camera_matrix())


def test_a_broken_extrinsic_is_ignored_for_the_camera(caplog: pytest.LogCaptureFixture) -> None:
    poses = pl.import_poses(pl.default_camera_matrix(), np.diag([1.0, 1.0, -1.0, 1.0]))
    np.testing.assert_allclose(poses.camera, pl.default_camera_matrix())
    assert "not a camera pose" in caplog.text


def test_exported_extrinsic_keeps_projections_and_stays_rigid() -> None:
    rng = np.random.default_rng(4)
    E = _rigid(rng)
    change = _rigid(rng) @ np.diag([2.5, 2.5, 2.5, 1.0])
    out = pl.exported_extrinsic(E, change)
    np.testing.assert_allclose(out[:3, :3] @ out[:3, :3].T, np.eye(3), atol=1e-12)
    points = rng.normal(size=(10, 3)) + np.array([0.0, 0.0, 5.0])
    moved = points @ change[:3, :3].T + change[:3, 3]
    seen_before = points @ E[:3, :3].T + E[:3, 3]
    seen_after = moved @ out[:3, :3].T + out[:3, 3]
    np.testing.assert_allclose(seen_after, 2.5 * seen_before, atol=1e-12)
