"""The compiled path saved whole, so that a later process loads it in about a second instead of tracing again.

torch.compile's caches (compile_store) spare Inductor's work but not Dynamo's: every new process traces the
compiled units again and rebuilds their guards (16-23 s on an H200). torch's AOT precompile
(``torch.compile(fn, fullgraph=True).aot_compile(example_inputs)``) captures one unit's traced bytecode,
guards and Inductor kernels; ``torch.compiler.load_compiled_function`` puts it back with no tracing.

- A unit is an unbound ``forward`` compiled with the module as its first input, so its parameters are graph
  inputs: the 24 blocks of each ViT share one compiled function (``patch_block``, ``image_block``), and any
  checkpoint of the same shapes runs on it. The other units are fastpath.compiled_unit_groups' decoders
  and heads, and the unprojection (gaussians.set_compiled_unproject).
- Each unit is one compile_store entry, keyed by the usual key (torch, CUDA, Triton, GPU, policy, preset,
  resolution) plus the unit, its input shapes and strides and a hash of the model code, so a function is
  never run on inputs, code or software it was not built for. A stored function torch refuses is deleted
  and compiled again.
- Installed through ``nn.Module._compiled_call_impl`` (what ``Module.compile`` sets); a call with other
  shapes (a batch of photos) or that fails the function's guards runs the eager module instead.

AOTInductor packages (``aoti_compile_and_package``) were tried first: on torch 2.11+cu130 every way of
loading one on CUDA (the package loader, the container runner; weights in or out of the library) segfaults
in the container's constructor, so they are not used (docs/performance-notes.md).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .. import gaussians
from ..model import RGBGaussianPredictor
from . import compile_store, fastpath
from .precision import Precision, inference_mode

logger = logging.getLogger(__name__)

UNPROJECT = "unproject"


def supported() -> bool:
    """Whether this torch can save and load precompiled functions (torch >= 2.10)."""
    # Not torch._dynamo: importing it costs seconds, and this runs on the way to the first photo.
    return hasattr(torch.compiler, "load_compiled_function")


@functools.cache
def code_hash() -> str:
    """A hash of the source the graphs come from: the model package, the fast path's rewrites, the unprojection."""
    here = Path(__file__).resolve().parent
    files = [*sorted((here.parent / "model").glob("*.py")), here / "fastpath.py", here / "precompiled.py"]
    files += [here.parent / "gaussians.py", here.parent / "eigen3.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def signature(args: Sequence[Any]) -> str:
    """Shapes, strides and dtypes of the tensors in ``args``, in order (the layout a function was built for)."""
    leaves = [leaf for leaf in pytree.tree_leaves(list(args)) if isinstance(leaf, torch.Tensor)]
    return ";".join(f"{tuple(t.shape)}/{t.stride()}/{str(t.dtype).removeprefix('torch.')}" for t in leaves)


def _trim(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The call's arguments less trailing Nones (an ``observe=None`` passed positionally)."""
    end = len(args)
    while end and args[end - 1] is None:
        end -= 1
    return args[:end]


def _empty_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)


def record_inputs(model: RGBGaussianPredictor, run: Callable[[], Any]) -> dict[str, tuple[Any, ...]]:
    """The arguments each group's first module (and the unprojection) get during ``run()``, as empty tensors of
    the same shape, strides and dtype: values don't matter to the trace, and copies would hold GPU memory."""
    groups = fastpath.compiled_unit_groups(model)
    recorded: dict[str, tuple[Any, ...]] = {}
    handles = []
    for name, modules in groups.items():

        def hook(module: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            if name not in recorded:
                recorded[name] = pytree.tree_map_only(torch.Tensor, _empty_like, _trim(args))

        handles.append(modules[0].register_forward_pre_hook(hook))

    def unproject_spy(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recorded.setdefault(UNPROJECT, tuple(_empty_like(t) for t in args))
        return gaussians._unproject_tensors(*args)

    gaussians.set_compiled_unproject(unproject_spy)
    try:
        run()
    finally:
        gaussians.set_compiled_unproject(None)
        for handle in handles:
            handle.remove()
    missing = sorted(set(groups) - set(recorded))  # the unprojection is compiled on CUDA only
    if missing:
        raise RuntimeError(f"the warm-up forward never called {', '.join(missing)}")
    return recorded


def unit_key(base: dict[str, str], name: str, args: Sequence[Any]) -> dict[str, str]:
    return {**base, "kind": "precompiled", "unit": name, "inputs": signature(args), "code": code_hash()}


def precompile(function: Callable[..., Any], args: tuple[Any, ...], precision: Precision) -> bytes:
    """Trace and compile ``function`` on ``args`` (under the photos' own grad and precision modes); its bytes."""
    device = next(t for t in pytree.tree_leaves(list(args)) if isinstance(t, torch.Tensor)).device
    # torch 2.10-2.11 offer .aot_compile only behind this flag (on by default from 2.12).
    flag: dict[str, Any] = {"enable_aot_compile": True} if hasattr(torch._dynamo.config, "enable_aot_compile") else {}
    with torch._dynamo.config.patch(flag):
        compiled = torch.compile(function, fullgraph=True, dynamic=False)
    with inference_mode(precision, device):
        result = compiled.aot_compile((args, {}))  # type: ignore[attr-defined]
    return bytes(type(result).serialize(result).serialized_data)


def load(payload: bytes) -> Callable[..., Any]:
    return torch.compiler.load_compiled_function(io.BytesIO(payload))  # type: ignore[arg-type]


class PrecompiledCall:
    """A module's call replaced by a precompiled function of (module, *args); other inputs run eagerly."""

    def __init__(self, function: Callable[..., Any], module: nn.Module, expected: str, name: str) -> None:
        self.function, self.module, self.expected, self.name = function, module, expected, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = _trim(args)
        if not kwargs and signature(args) == self.expected:
            try:
                return self.function(self.module, *args)
            except RuntimeError as exc:
                if "GuardManager check failed" not in str(exc):
                    raise
                logger.warning("precompiled %s does not apply here (%s); running it eagerly", self.name, exc)
                self.expected = ""  # don't check again
        return self.module._call_impl(*args, **kwargs)


def _function_of(name: str, modules: Sequence[nn.Module]) -> Callable[..., Any]:
    if name == UNPROJECT:
        return gaussians._unproject_tensors
    return type(modules[0]).forward  # type: ignore[no-any-return]


def _example(name: str, modules: Sequence[nn.Module], args: tuple[Any, ...]) -> tuple[Any, ...]:
    return args if name == UNPROJECT else (modules[0], *args)


def build_precompiled(
    twin: RGBGaussianPredictor,
    precision: Precision,
    store: compile_store.CompileStore,
    base_key: dict[str, str],
) -> tuple[RGBGaussianPredictor, dict[str, Any]]:
    """Make ``twin`` (warm_start.share_weights_copy of the loaded model) the compiled path, from precompiled
    functions: stored ones loaded, missing ones compiled and stored first.

    The unprojection's function is installed process-wide (gaussians.set_compiled_unproject), used by photos
    on the compiled path. Returns the twin and a report per unit (loaded or compiled, seconds) and of the
    final warm-up forward.
    """
    groups = fastpath.compiled_unit_groups(twin)
    for modules in groups.values():
        for module in modules:
            fastpath.use_channel_group_norm(module)
    inputs = record_inputs(twin, lambda: fastpath.warm_up(twin, precision))
    report: dict[str, Any] = {}
    calls: list[PrecompiledCall] = []
    unproject: Callable[..., Any] | None = None
    for name in [*groups, UNPROJECT] if UNPROJECT in inputs else groups:
        modules, args = groups.get(name, []), inputs[name]
        key = unit_key(base_key, name, args)
        start = time.perf_counter()
        function, how = None, "loaded"
        entry = store.read(key)
        if entry is not None and entry.status == "ok" and entry.payload:
            try:
                function = load(entry.payload)
            except Exception as exc:  # another torch's format, a truncated pickle: compile it again
                logger.warning("discarding the stored %s function (%s: %s)", name, type(exc).__name__, exc)
                store.discard(key)
        if function is None:
            payload = precompile(_function_of(name, modules), _example(name, modules, args), precision)
            store.write(key, payload, time.perf_counter() - start)
            function, how = load(payload), "compiled"
        seconds = time.perf_counter() - start
        logger.info("%s: %s in %.2f s", name, how, seconds)
        report[name] = {"how": how, "seconds": round(seconds, 3)}
        if name == UNPROJECT:
            unproject = function
        else:
            calls += [PrecompiledCall(function, module, signature(args), name) for module in modules]
    for call in calls:
        call.module._compiled_call_impl = call  # type: ignore[assignment]
    gaussians.set_compiled_unproject(unproject)
    # One forward here, in the background: a function that cannot run fails the build (photos stay eager), and
    # the first compiled photo does not pay what a function costs on its first call (2.3 s measured once).
    report["warm_up"] = {"how": "ran", "seconds": round(fastpath.warm_up(twin, precision), 3)}
    return twin, report
