"""Rendering a scene: colour conventions, the image round trip, videos and cancellation (torch fallback, CPU)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sharp_sidecar.errors import BadPlyError, Cancelled
from sharp_sidecar.io import conventions as cv
from sharp_sidecar.io import ply, trajectory
from sharp_sidecar.render import colormap, render, render_scene
from sharp_sidecar.render.video import read_video_info

from tests.pixel_splats import write_pixel_ply


@pytest.fixture(scope="module")
def small_image(reference_images) -> np.ndarray:  # type: ignore[no-untyped-def]
    image = Image.open(reference_images["synth_640x480"]).convert("RGB").resize((160, 120), Image.Resampling.BOX)
    return np.asarray(image)


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory: pytest.TempPathFactory, small_image: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("scene") / "pixels.ply"
    write_pixel_ply(path, small_image, focal=140.0)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def test_pixel_ply_rendered_from_its_camera_reproduces_the_image(tmp_path: Path, reference_images) -> None:  # type: ignore[no-untyped-def]
    image = np.asarray(Image.open(reference_images["synth_640x480"]).convert("RGB"))
    height, width = image.shape[:2]
    focal = 500.0
    depth_truth = write_pixel_ply(tmp_path / "pixels.ply", image, focal)
    scene = render_scene.scene_from_ply(tmp_path / "pixels.ply")
    assert scene.image_wh == (width, height) and scene.focal_px == focal
    rasterizer = render.make_rasterizer(scene, "torch")
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float32)
    colour, depth = render.render_images(rasterizer, np.eye(4, dtype=np.float32)[None], K[None], width, height)
    value = psnr(colour[0], image)
    print(f"pixel-PLY round trip {width}x{height}: PSNR {value:.2f} dB")
    # sRGB -> linear -> x0.999 (gsplat's alpha cap) -> sRGB, truncated: at most one level lower.
    assert value > 45.0
    assert np.all(colour[0].astype(int) - image <= 0) and np.all(colour[0].astype(int) - image >= -1)
    np.testing.assert_allclose(depth[0], depth_truth, rtol=1e-5)


def test_linear_ply_colours_are_not_converted(tmp_path: Path) -> None:
    image = np.full((8, 8, 3), 200, np.uint8)
    write_pixel_ply(tmp_path / "a.ply", image, focal=10.0)
    contents = ply.read_ply(tmp_path / "a.ply")
    srgb_scene = render_scene.scene_from_ply(tmp_path / "a.ply")
    extras = [(name, contents.elements[name]) for name in contents.elements if name != "vertex"]
    extras = [e if e[0] != "color_space" else ply.metadata_element("color_space", [1], "u1") for e in extras]
    ply.write_ply(tmp_path / "b.ply", np.asarray(contents.vertex), extras)
    linear_scene = render_scene.scene_from_ply(tmp_path / "b.ply")
    assert torch.allclose(linear_scene.colors, torch.full_like(linear_scene.colors, 200 / 255), atol=1e-6)
    assert torch.allclose(srgb_scene.colors, cv.srgb_to_linear(linear_scene.colors), atol=1e-6)


def test_not_a_splat_ply_is_a_bad_ply(tmp_path: Path) -> None:
    ply.write_ply(tmp_path / "mesh.ply", ply.structured({"x": np.zeros(3, np.float32)}))
    with pytest.raises(BadPlyError, match="not a 3D Gaussian splat PLY"):
        render_scene.scene_from_ply(tmp_path / "mesh.ply")


def test_reference_trajectory_video_with_depth_and_pngs(tmp_path: Path, small_ply: Path) -> None:
    scene = render_scene.scene_from_ply(small_ply)
    traj = render_scene.scene_trajectory(scene, trajectory.TrajectoryParams(type="swipe", num_steps=5))
    assert (traj.width, traj.height) == (160, 120) and traj.num_frames == 5
    events: list[tuple[str, float | None, str]] = []
    outputs = render.RenderOutputs(
        video=tmp_path / "a.mp4", depth_video=tmp_path / "a.depth.mp4", png_dir=tmp_path / "png"
    )
    result = render.render_video(
        render.make_rasterizer(scene), traj.viewmats, traj.K, traj.width, traj.height, outputs,
        progress=lambda *e: events.append(e), batch=2,
    )  # fmt: skip
    assert result.frames == 5 and result.backend == "torch"
    for key in ("video", "depth_video"):
        info = read_video_info(result.outputs[key])
        assert info["frames"] == 5 and info["size"] == (160, 120) and info["fps"] == 30
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:04d}.png" for i in range(1, 6)]
    first = np.asarray(Image.open(pngs[0]))
    assert first.shape == (120, 160, 3) and first.std() > 10  # a real picture, not a blank frame
    fractions = [f for stage, f, _ in events if stage == "render"]
    assert fractions == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert not list(tmp_path.glob(".*partial*"))


def test_cancel_between_batches_leaves_no_files(tmp_path: Path, small_ply: Path) -> None:
    scene = render_scene.scene_from_ply(small_ply)
    traj = render_scene.scene_trajectory(scene, trajectory.TrajectoryParams(num_steps=6), resolution=(64, 48))
    cancel = threading.Event()

    def progress(stage: str, fraction: float | None, message: str) -> None:
        if fraction and fraction >= 0.5:
            cancel.set()

    outputs = render.RenderOutputs(video=tmp_path / "c.mp4", depth_video=tmp_path / "c.depth.mp4")
    with pytest.raises(Cancelled, match="after 3 of 6"):  # the fallback checks after every frame
        render.render_video(
            render.make_rasterizer(scene), traj.viewmats, traj.K, 64, 48, outputs, progress, cancel, batch=4
        )
    assert list(tmp_path.iterdir()) == []


def test_srgb_output_truncates_and_depth_divides_by_alpha() -> None:
    linear = torch.tensor([0.0, 0.0031308, 0.2140411, 1.0])
    # float32 sRGB(1.0) is 0.99999994: the truncating cast gives 254, exactly as the reference's cast does.
    np.testing.assert_array_equal(render.to_srgb_u8(linear).numpy(), [0, 10, 127, 254])
    colours = torch.rand(4, 3)
    scene = render_scene.RenderScene(
        means=torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0], [0.3, 0.0, 3.0], [0.0, 0.0, 9.0]]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1),
        scales=torch.full((4, 3), 0.05),
        opacities=torch.tensor([0.4, 0.5, 0.6, 0.3]),
        colors=colours,
        image_wh=(16, 16),
        focal_px=20.0,
        source="test",
    )
    rast = render.make_rasterizer(scene)
    K = torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])
    raw, alpha = rast.raw(torch.eye(4)[None], K, 16, 16)
    _, depth = rast.render(torch.eye(4)[None], K, 16, 16)
    centre = raw[0, 8, 8]
    assert torch.isclose(depth[0, 8, 8], centre[3] / alpha[0, 8, 8, 0])
    # Centre pixel: the 2 m and 4 m (and 9 m) Gaussians blend, so the depth lies strictly between 2 and 9.
    assert 2.0 < float(depth[0, 8, 8]) < 9.0


def test_turbo_colormap() -> None:
    lut = colormap.turbo_lut_u8()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    # Turbo runs dark -> blue -> cyan -> green -> yellow -> red -> dark red.
    assert lut[0].astype(int).sum() < 120 and lut[25].argmax() == 2 and lut[100].argmax() == 1
    assert lut[200].argmax() == 0 and lut[255, 0] > 100 and lut[255, 1:].max() < 20
    depth = np.array([-1.0, 0.0, 25.0, 50.0, 80.0])
    out = colormap.colorize_depth(depth, 50.0)
    np.testing.assert_array_equal(out[[0, 1]], lut[[0, 0]])
    np.testing.assert_array_equal(out[[3, 4]], lut[[255, 255]])
    np.testing.assert_array_equal(colormap.colorize_depth(torch.from_numpy(depth), 50.0).numpy(), out)
    assert colormap.depth_range(np.array([3.0, 120.0])) == 50.0
    assert colormap.depth_range(torch.tensor([3.0, 12.0])) == 12.0


def test_backend_choice_on_cpu(small_ply: Path) -> None:
    from sharp_sidecar.errors import DeviceError

    scene = render_scene.scene_from_ply(small_ply)
    assert render.make_rasterizer(scene).name == "torch"
    with pytest.raises(DeviceError, match="CUDA only"):
        render.make_rasterizer(scene, "gsplat")
    with pytest.raises(ValueError, match="unknown render backend"):
        render.make_rasterizer(scene, "vulkan")
    assert render.pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="use --device cpu"):
            render.pick_device("cuda")
