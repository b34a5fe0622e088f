"""A photo whose low-precision outputs are not finite is computed again in the policy's safer ``fallback``.

float16 holds values up to 65504: an activation beyond that becomes inf, then NaN or saturated values in the
Gaussians. :func:`pipeline.predict` reports ``finite`` (inf/NaN check on the decoders' outputs and the
Gaussians, read after its one sync, so it costs a few reductions); :func:`predict_guarded` then recomputes that
one photo with the same model's weights cast to the fallback's dtype (bfloat16 has float32's range) and says
so in the prediction's notes. The model's own weights are never changed: the cast copies are swapped in for
the one photo and dropped, so the next photo runs the fast path again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..model import RGBGaussianPredictor
from .pipeline import CancelledFn, Prediction, ProgressFn, predict
from .precision import Precision, get_precision

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def weights_as(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Run ``model`` with every floating parameter cast to ``dtype`` (one copy per shared tensor), then restore.

    Only this module tree's parameter slots are swapped, not the Parameter objects, so another tree sharing
    them (the compiled twin of warm_start) is untouched.
    """
    copies: dict[int, torch.Tensor] = {}
    saved: list[tuple[dict[str, Any], str, Any]] = []
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None or not param.is_floating_point() or param.dtype == dtype:
                continue
            if id(param) not in copies:
                copies[id(param)] = param.detach().to(dtype)
            saved.append((module._parameters, name, param))
            module._parameters[name] = copies[id(param)]  # type: ignore[assignment]
    try:
        yield
    finally:
        for slots, name, param in saved:
            slots[name] = param


def predict_guarded(
    model: RGBGaussianPredictor,
    rgb: Any,
    f_px: float,
    *,
    precision: Precision,
    eager_model: RGBGaussianPredictor | None = None,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> Prediction:
    """:func:`pipeline.predict`, and if its outputs are not finite, the same photo again in ``precision.fallback``.

    Args:
        model: the model to run first (compiled or not).
        eager_model: the uncompiled model sharing its weights, for the recomputation (default: ``model``; a
            compiled model must not see other dtypes, or it would compile again).
    """
    prediction = predict(model, rgb, f_px, precision=precision, progress=progress, cancelled=cancelled)
    if prediction.finite:
        return prediction
    if precision.fallback is None:
        prediction.notes.append(f"the {precision.name} result has non-finite values (no safer precision to use)")
        logger.warning("non-finite outputs in the %s path and no fallback", precision.name)
        return prediction
    fallback = get_precision(precision.fallback)
    logger.warning("the %s path overflowed (non-finite outputs): computing again in %s", precision.name, fallback.name)
    if progress is not None:
        progress("fallback", None, f"{precision.name} overflowed on this photo: computing it again in {fallback.name}")
    target = eager_model if eager_model is not None else model
    with weights_as(target, fallback.dtype):
        again = predict(target, rgb, f_px, precision=fallback, progress=progress, cancelled=cancelled)
    again.timings = {**{f"{name} ({precision.name})": s for name, s in prediction.timings.items()}, **again.timings}
    again.notes.append(
        f"{precision.name} overflowed on this photo (non-finite values); it was computed again in {fallback.name}"
    )
    if not again.finite:
        again.notes.append(f"the {fallback.name} result still has non-finite values")
    return again
