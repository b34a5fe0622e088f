"""One-click render settings that make Blender's pictures of splats match SHARP's own renderer.

Measured with bpy 5.3.0 against the sidecar's rasteriser on soft and compact scenes made from a photo
(tests/blender/test_native_fidelity.py, 120x80 px; PSNR against the rasteriser's image):

* **Standard** view transform, no look, exposure 0, gamma 1: the PLY's colours are sRGB and the
  renderer blends in linear light, so Standard gives back the photo's colours. AgX costs ~6 dB.
* **Cycles** treats each splat's opacity stochastically, so soft, layered splats need many samples
  and enough transparent bounces to see through every layer; a near-zero pixel filter samples the
  pixel centre, as a rasteriser does. Opaque splats converge slowly where overlapping neighbours of
  different colours meet (each sample picks one of them): compact scene, 5° orbit, OpenImageDenoise
  on 128 samples 38.9 dB, on 512 samples 40.2 dB (1024 without denoising 40.2 dB; adaptive sampling,
  1024 at threshold 0.005, 39.8 dB), so 512 samples, denoised.
* **EEVEE** blends splats by stochastic (dithered) transparency, so it needs many samples, and its
  film filter blurs splats of a pixel or less: source view, 64 samples, compact scene 34.3 dB with
  the 1.5 px default filter, 36.2 at 1.0 px, 39.0 at 0.5, 39.6 at 0.25, 38.7 at 0.01 (grain); the
  soft scene needs the samples that a narrow filter no longer averages (0.25 px: 33.1 dB at 64
  samples, 36.2 at 256; 1.5 px, 64: 34.8). At 256 samples, all three views: 0.5 px gives compact
  39.8-41.8 and soft 35.6-36.4 dB (0.25 px: 39.5-41.8, 35.5-36.2). At 512 samples, 0.5 px: compact
  40.2-42.3, soft 36.4-37.1 dB (soft, 5° orbit, 512 samples: 36.3 at 0.35 px, 36.4 at 0.5, 36.5 at
  0.6, 35.8 at 0.75). The soft scene's floor is EEVEE's own kernel: it draws exp(-d²) over a
  billboard of d ≤ 2 that spans 3σ, a Gaussian 1.06x as wide as the splat's, so layered soft splats
  come out 2-3 levels too bright; against the rasteriser given 1.06x scales, the same EEVEE images
  score 38.7-39.6 dB at 256 samples and 40.9-41.6 at 512, so what is left beyond the kernel is
  sampling noise. Hence 512 samples, 0.5 px (a 120x80 frame on Mesa's software GL: ~45-75 s, twice
  the time of 256).
* No dither: dithering adds noise on the 8-bit output.

The engine itself is left as the user chose; both engines' settings are set.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy


@dataclass(frozen=True)
class SplatRenderSettings:
    cycles_samples: int = 512
    cycles_denoise: bool = True
    cycles_filter_width: float = 0.01  # px; Blender's minimum
    cycles_transparent_bounces: int = 256
    eevee_samples: int = 512
    eevee_filter_size: float = 0.5  # px
    view_transform: str = "Standard"


DEFAULT = SplatRenderSettings()


def apply(scene: bpy.types.Scene, settings: SplatRenderSettings = DEFAULT) -> None:
    """Set the colour management and both engines' settings of ``scene`` for splats."""
    view = scene.view_settings
    view.view_transform = settings.view_transform
    view.look = "None"
    view.exposure = 0.0
    view.gamma = 1.0
    view.use_curve_mapping = False
    scene.display_settings.display_device = "sRGB"
    scene.render.dither_intensity = 0.0
    eevee = scene.eevee
    eevee.taa_render_samples = settings.eevee_samples
    scene.render.filter_size = settings.eevee_filter_size
    cycles = getattr(scene, "cycles", None)  # absent when the Cycles add-on is disabled
    if cycles is not None:
        cycles.samples = settings.cycles_samples
        cycles.use_adaptive_sampling = False
        cycles.use_denoising = settings.cycles_denoise
        if settings.cycles_denoise:
            cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.filter_width = settings.cycles_filter_width
        cycles.transparent_max_bounces = settings.cycles_transparent_bounces


class SHARP_OT_render_setup(bpy.types.Operator):
    """Set the view transform, Cycles and EEVEE so that renders of splats match SHARP's own renderer"""

    bl_idname = "sharp.render_setup"
    bl_label = "Render Set-up for Splats"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    def execute(self, context: bpy.types.Context) -> set[str]:
        apply(context.scene)
        s = DEFAULT
        self.report(
            {"INFO"},
            f"{s.view_transform} view; Cycles {s.cycles_samples} samples, EEVEE {s.eevee_samples} samples, "
            "splat filters",
        )
        return {"FINISHED"}


CLASSES = (SHARP_OT_render_setup,)
