"""The GPU fast path: a loaded predictor made ready for a precision policy (layout, compiled kernels, warm-up).

:func:`prepare` is called once per loaded model. For ``bf16`` it stores the convolution weights
channels_last (NHWC is the layout cuDNN's bf16 tensor-core kernels read without a transpose), wraps the
ViT blocks, the two decoders, the disparity head and the Gaussian decoder in ``torch.compile`` (Inductor
fuses the LayerNorm / GELU / residual / ReLU / GroupNorm traffic around cuBLAS and cuDNN calls), and runs
one warm-up forward so the compile happens there, reported as the ``compile`` progress stage, rather than
inside the first photo. Compiled kernels are cached under the user's cache directory, so later processes
start in seconds. The weights' dtype was already chosen at load time (see :func:`load_predictor`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..gaussians import unproject
from ..image import gpu_jpeg
from ..model import RGBGaussianPredictor, predictor_from_state_dict
from ..model.vit import Mlp, PatchEmbed
from .precision import Precision, inference_mode

logger = logging.getLogger(__name__)

Progress = Callable[[str, "float | None", str], None]
_COMPILED_ATTR = "_sharp_compiled"
_HOOKS_ATTR = "_sharp_compile_hooks"


def cache_dir() -> Path:
    """Where compiled kernels go: $SHARP_CACHE_DIR, else $XDG_CACHE_HOME/sharp_sidecar, else ~/.cache/sharp_sidecar."""
    root = os.environ.get("SHARP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sharp_sidecar"
    )
    return Path(root) / "compile"


def use_compile_cache() -> Path:
    """Point Inductor's and Triton's caches at :func:`cache_dir` (unless the user set them) and return it."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return folder


def load_predictor(
    state_dict: Mapping[str, torch.Tensor],
    device: torch.device,
    precision: Precision,
    source: str = "the checkpoint",
) -> RGBGaussianPredictor:
    """Build the predictor with its weights in the policy's dtype on ``device``.

    Each tensor is converted on its way to the device (one tensor in flight at a time), so a bf16 model
    never has a full float32 copy on the GPU. Channels-last and the fused kernels (:func:`use_fused_kernels`,
    CUDA only) are applied here too.
    """
    model = predictor_from_state_dict(state_dict, device=device, dtype=precision.dtype, source=source)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        encoder = model.monodepth_model.monodepth_predictor.encoder
        for vit in (encoder.patch_encoder, encoder.image_encoder):
            vit.channels_last_maps = True  # token grids become NHWC views: no transposing copy per map
    if precision.fused_kernels and device.type == "cuda":
        use_fused_kernels(model)
    return model


class ChannelGroupNorm(nn.Module):
    """GroupNorm (same parameters and result as nn.GroupNorm) written for Inductor on channels_last maps.

    Inductor lowers ``native_group_norm`` to one reduction per (batch, group): 8 programs for a 128 ch @ 768²
    map, ~1-3 ms each on an H100. Here the statistics are per-channel sums first (B·C parallel reductions
    over the pixels, coalesced along the channels), then summed per group; two passes (mean, then the
    squared deviations) keep the float32 variance exact enough. Inputs of any float dtype; math in float32.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        g = self.num_groups
        xf = x.float()
        count = (c // g) * xf[0, 0].numel()
        mean = xf.sum(dim=(2, 3)).view(b, g, c // g).sum(-1) / count  # (B, G)
        mean_c = mean.repeat_interleave(c // g, dim=1)[:, :, None, None]  # (B, C, 1, 1)
        var = (xf - mean_c).square().sum(dim=(2, 3)).view(b, g, c // g).sum(-1) / count
        rstd_c = (var + self.eps).rsqrt().repeat_interleave(c // g, dim=1)[:, :, None, None]
        y = (xf - mean_c) * rstd_c
        if self.weight is not None:
            y = y * self.weight.float()[:, None, None] + self.bias.float()[:, None, None]
        return y.to(x.dtype)


def use_channel_group_norm(module: nn.Module) -> int:
    """Replace every nn.GroupNorm under ``module`` by :class:`ChannelGroupNorm` (same parameters); the count."""
    count = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, ChannelGroupNorm(child))
                count += 1
    return count


class GeluEpilogueMlp(nn.Module):
    """The ViT MLP with fc1's bias and GELU applied in the GEMM's epilogue (cuBLASLt ``GELU_BIAS``).

    Inductor leaves the GELU after ``fc1`` as its own pass over the (tokens, 4096) activations (3.1 ms of a
    53 ms forward on an H100); cuBLASLt applies it while the tile is still in registers. Its GELU is the tanh
    form, within 5e-4 of the exact one: far below bf16's resolution, so only for the bf16/fp16 paths.
    Parameters are the original ``fc1`` / ``fc2`` modules (same state-dict keys).
    """

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.fc1, self.fc2 = mlp.fc1, mlp.fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        hidden = torch._addmm_activation(self.fc1.bias, rows, self.fc1.weight.t(), use_gelu=True)
        return self.fc2(hidden.view(*x.shape[:-1], hidden.shape[-1]))


class Conv2dReLU(nn.Module):
    """relu(conv2d(x) + bias) in one cuDNN kernel on CUDA (``cudnn_convolution_relu``); plain ops elsewhere.

    Inductor keeps cuDNN's convolution and adds the bias and ReLU in a separate pass over the output map
    (0.2-0.3 ms per 768² map on an H100); cuDNN's fused kernel runs at the bare convolution's speed.
    Holds the convolution's own parameters (same state-dict keys).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or conv.bias is None:
            raise ValueError("Conv2dReLU needs a zero-padded convolution with a bias and numeric padding")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return torch.cudnn_convolution_relu(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups))


class GemmPatchEmbed(nn.Module):
    """The ViT patch embedding as one GEMM over the unfolded 16×16 patches (same ``proj`` parameters).

    cuDNN runs a 16×16 stride-16 convolution on a 3-channel NHWC input through a padding kernel and a slow
    algorithm: 0.89 ms for the 35 patches on an H100, against ~0.05 ms for the same 32 GFLOP as a GEMM.
    """

    def __init__(self, embed: PatchEmbed) -> None:
        super().__init__()
        conv = embed.proj
        if conv.kernel_size != conv.stride or conv.padding != (0, 0) or conv.groups != 1:
            raise ValueError("GemmPatchEmbed needs non-overlapping, unpadded patches")
        self.proj = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.proj
        p, q = conv.kernel_size
        n, c, h, w = x.shape
        rows, cols = h // p, w // q
        # (n, c, rows, p, cols, q) -> one (p, q, c) vector per patch, row-major: the NHWC weight's own order.
        patches = x.reshape(n, c, rows, p, cols, q).permute(0, 2, 4, 3, 5, 1).reshape(n * rows * cols, p * q * c)
        weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, p * q * c)
        return F.linear(patches, weight, conv.bias).view(n, rows * cols, conv.out_channels)


class ConvTranspose2dBiasAfter(nn.Module):
    """ConvTranspose2d with its bias added as a separate element-wise op (same parameters).

    cuDNN's transposed convolution adds the bias with an eager broadcast pass (0.9 ms for the disparity
    head's 128 ch @ 1536² map on an H100); inside a compiled graph the addition is one Triton pass instead.
    """

    def __init__(self, conv: nn.ConvTranspose2d) -> None:
        super().__init__()
        if conv.bias is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                "ConvTranspose2dBiasAfter needs a zero-padded transposed convolution with a bias and numeric padding"
            )
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.output_padding = conv.stride, conv.padding, conv.output_padding
        self.groups, self.dilation = conv.groups, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(
            x, self.weight, None, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )
        return y + self.bias.view(1, -1, 1, 1)


def use_fused_kernels(model: nn.Module) -> dict[str, int]:
    """Swap in the fast path's kernels: :class:`GeluEpilogueMlp` for every ViT MLP, :class:`Conv2dReLU` for each
    Conv2d → ReLU pair, :class:`GemmPatchEmbed` and :class:`ConvTranspose2dBiasAfter`.

    In place and idempotent; parameters and state-dict keys are unchanged (the ReLU becomes nn.Identity).
    Returns how many of each were swapped.
    """
    counts = {"mlp": 0, "conv_relu": 0, "patch_embed": 0, "conv_transpose": 0}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Mlp) and isinstance(child.act, nn.GELU) and child.act.approximate == "none":
                setattr(parent, name, GeluEpilogueMlp(child))
                counts["mlp"] += 1
            elif type(child) is PatchEmbed:
                setattr(parent, name, GemmPatchEmbed(child))
                counts["patch_embed"] += 1
            elif type(child) is nn.ConvTranspose2d and child.bias is not None:
                setattr(parent, name, ConvTranspose2dBiasAfter(child))
                counts["conv_transpose"] += 1
        if isinstance(parent, nn.Sequential):
            for i in range(len(parent) - 1):
                conv, act = parent[i], parent[i + 1]
                if type(conv) is nn.Conv2d and type(act) is nn.ReLU and conv.bias is not None:
                    parent[i], parent[i + 1] = Conv2dReLU(conv), nn.Identity()
                    counts["conv_relu"] += 1
    return counts


def compiled_unit_groups(model: RGBGaussianPredictor) -> dict[str, list[nn.Module]]:
    """The modules worth compiling, by graph: the blocks of each ViT share one (same class and input shapes),
    then the decoders and heads. inference.precompiled saves one function per group."""
    predictor = model.monodepth_model.monodepth_predictor
    encoder = predictor.encoder
    return {
        "patch_block": list(encoder.patch_encoder.blocks),
        "image_block": list(encoder.image_encoder.blocks),
        "decoder": [predictor.decoder],
        "head": [predictor.head],
        "feature_model": [model.feature_model],
        "prediction_head": [model.prediction_head],
    }


def compiled_units(model: RGBGaussianPredictor) -> list[nn.Module]:
    """:func:`compiled_unit_groups`' modules in one list (the 48 ViT blocks first)."""
    return [unit for units in compiled_unit_groups(model).values() for unit in units]


def compile_model(model: RGBGaussianPredictor, mode: str | None = None) -> None:
    """Wrap :func:`compiled_units` in torch.compile, in place (idempotent). Shapes are static (one resolution).

    With ``mode="reduce-overhead"`` (CUDA graphs) each photo's forward starts a new graph step; the
    initializer and composer are compiled without graphs either way, since their outputs are kept.
    """
    if getattr(model, _COMPILED_ATTR, False):
        return
    use_compile_cache()
    for unit in compiled_units(model):
        use_channel_group_norm(unit)
        unit.compile(dynamic=False, mode=mode)
    model.init_model.compile(dynamic=False)
    model.gaussian_composer.compile(dynamic=False)
    if mode == "reduce-overhead":
        encoder = model.monodepth_model.monodepth_predictor.encoder
        hook = encoder.register_forward_pre_hook(lambda module, args: torch.compiler.cudagraph_mark_step_begin())
        setattr(model, _HOOKS_ATTR, [hook])
    setattr(model, _COMPILED_ATTR, True)


def warm_up(model: RGBGaussianPredictor, precision: Precision, runs: int = 1) -> float:
    """Run full forwards (+ unprojection) on a fixed random input; returns seconds (compile included)."""
    device = next(model.parameters()).device
    r = model.config.resolution
    generator = torch.Generator(device="cpu").manual_seed(0)
    image = torch.rand(1, 3, r, r, generator=generator).to(device)
    factor = torch.tensor([1.0], device=device)
    start = time.perf_counter()
    with inference_mode(precision, device):
        method = "compiled" if precision.compile and device.type == "cuda" else "closed_form"
        for _ in range(runs):
            unproject(model(image, factor), 2.0 * r, (r, r), method)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _on_cuda(model: nn.Module) -> bool:
    return next(model.parameters()).device.type == "cuda"


def uncompile(model: RGBGaussianPredictor) -> None:
    """Undo :func:`compile_model` (the GroupNorm rewrite stays: it is the same function in eager mode)."""
    for unit in [*compiled_units(model), model.init_model, model.gaussian_composer]:
        unit._compiled_call_impl = None
    for handle in getattr(model, _HOOKS_ATTR, []):
        handle.remove()
    setattr(model, _HOOKS_ATTR, [])
    setattr(model, _COMPILED_ATTR, False)
    torch._dynamo.reset()


def prepare(
    model: RGBGaussianPredictor, precision: Precision, progress: Progress | None = None, compile_mode: str | None = None
) -> tuple[Precision, float]:
    """Make a loaded model ready for ``precision``: compile (CUDA only) and warm up, nvJPEG included.

    The first call in a process compiles (about a minute cold, ~10 s with a warm cache); later calls on the same
    model return at once. If compiling fails (no Triton or C compiler, as on a stock Windows install), the model
    runs eagerly instead, with a warning.

    Returns:
        The policy to run with (``precision``, or it without compile after a failure) and the seconds spent.
    """
    if not _on_cuda(model) or getattr(model, _COMPILED_ATTR, False):
        return precision, 0.0
    start = time.perf_counter()
    if precision.gpu_jpeg:
        gpu_jpeg.warm_up(next(model.parameters()).device)
    if not precision.compile:
        return precision, time.perf_counter() - start
    if progress is not None:
        progress("compile", None, f"compiling the {precision.name} kernels (once per process; cached in {cache_dir()})")
    graphs = precision.cuda_graphs
    try:
        compile_model(model, compile_mode or ("reduce-overhead" if graphs else None))
        warm_up(model, precision, runs=3 if graphs else 1)  # graphs are recorded on the 2nd-3rd call
        seconds = time.perf_counter() - start
    except Exception as exc:  # Inductor needs Triton and a C compiler; without them the eager kernels still work
        logger.warning(
            "torch.compile failed (%s: %s); the %s path runs without compiled kernels (slower, same results)",
            type(exc).__name__,
            exc,
            precision.name,
        )
        uncompile(model)
        return dataclasses.replace(precision, compile=False, cuda_graphs=False), time.perf_counter() - start
    logger.info("compiled and warmed up the %s path in %.1f s", precision.name, seconds)
    return precision, seconds
