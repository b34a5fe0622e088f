"""`sharp predict`: photos -> PLY files, plus the two steps the server shares with it.

:func:`load_model` turns a checkpoint (resolved, downloaded if needed) into a predictor on a device;
:func:`predict_file` runs one photo through it and writes the PLY. :func:`run` is the command: it
finds the photos, loads the model once, runs each photo (a bad one is reported and skipped) and
returns a non-zero exit code if any failed. Only :func:`run` prints.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import guards
from ..checkpoint import ProgressCallback, load_state_dict_file, resolve_checkpoint
from ..errors import BadImageError, SharpError
from ..guards import safe_name
from ..image import imageio
from .results import FileResult, expected_gaussians

logger = logging.getLogger(__name__)

# progress(stage, fraction of the whole job in [0, 1] or None, message)
StageProgress = Callable[[str, "float | None", str], None]


@dataclass
class LoadedModel:
    """A predictor ready to run, and where it came from."""

    model: Any  # model.RGBGaussianPredictor (kept loose so this module imports without torch)
    device: Any  # torch.device
    checkpoint: Path
    preset: str
    load_s: float
    precision: Any = None  # precision.Precision; None = fp32
    paths: Any = None  # warm_start.PathSwitch while the compiled path is built in the background, else None
    load_timings: dict[str, float] = field(default_factory=dict)

    def exclusive(self) -> Any:
        """A context to run one photo in (keeps the background compile's tracing out of an eager forward)."""
        if self.paths is not None:
            return self.paths.exclusive()
        return contextlib.nullcontext()

    def photo_done(self) -> None:
        """A photo has been written: the background compile may start (it waits, so as not to slow the first)."""
        if self.paths is not None:
            self.paths.kick()

    def current(self) -> tuple[Any, Any, str | None]:
        """(model, precision policy, note) for the next photo: the compiled path once it is ready."""
        if self.paths is not None:
            return self.paths.current()  # type: ignore[no-any-return]
        from .precision import DEFAULT

        return self.model, self.precision or DEFAULT, None


COMPILE_ENV = "SHARP_COMPILE"  # background (default) | blocking | off
COMPILE_DELAY_S = 5.0  # the background compile waits this long for the first photo to finish


def load_model(
    checkpoint: str | os.PathLike[str] | None,
    device: str = "auto",
    download: ProgressCallback | None = None,
    precision: str = "auto",
    progress: StageProgress | None = None,
    compile: str | None = None,
) -> LoadedModel:
    """Resolve the checkpoint (downloading it on first use), read it and build the predictor on ``device``.

    ``precision`` names a policy of :mod:`precision` ("auto": the fp16 fast path on CUDA, else fp32); the
    weights are loaded straight in its dtype. A compiled policy's kernels are built according to ``compile``
    (default $SHARP_COMPILE, else ``background``): ``background`` returns at once with the eager path and
    switches when the compiled one is ready (warm_start); ``blocking`` compiles here (``compile`` stage);
    ``off`` runs eagerly.

    Raises:
        CheckpointError: no file, a failed download, or a file that is not a SHARP checkpoint.
        DeviceError: the device is not available.
    """
    from . import fastpath
    from .pipeline import resolve_device
    from .precision import resolve_precision

    target = resolve_device(device)
    policy = resolve_precision(precision, target)
    path = resolve_checkpoint(checkpoint, progress=download)
    start = time.perf_counter()
    state_dict = load_state_dict_file(path)
    read_s = time.perf_counter() - start
    model = fastpath.load_predictor(state_dict, target, policy, source=str(path))
    del state_dict
    build_s = time.perf_counter() - start - read_s
    how = compile or os.environ.get(COMPILE_ENV, "").strip() or "background"
    if how not in ("background", "blocking", "off"):
        raise ValueError(f"{COMPILE_ENV} must be background, blocking or off, got {how!r}")
    paths = None
    if policy.compile and target.type == "cuda" and how != "blocking":
        from .precision import eager_twin

        if how == "background":  # nvJPEG is started there too; Pillow decodes until then
            from .warm_start import PathSwitch

            paths = PathSwitch(model, policy, delay=COMPILE_DELAY_S)
            paths.start(progress)
        elif policy.gpu_jpeg:
            from ..image import gpu_jpeg

            gpu_jpeg.warm_up(target)
        policy = eager_twin(policy)
    else:
        policy, _ = fastpath.prepare(model, policy, progress)  # eager policy if compiling failed
    elapsed = time.perf_counter() - start
    logger.info("model from %s on %s (%s) in %.1f s", path, target, policy.name, elapsed)
    timings = {"read": read_s, "build": build_s, "prepare": elapsed - read_s - build_s}
    return LoadedModel(model, target, path, model.config.name, elapsed, policy, paths, timings)


def predict_file(
    loaded: LoadedModel,
    image: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    focal_mm: float | None = None,
    focal_px: float | None = None,
    plain: bool = False,
    progress: StageProgress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> FileResult:
    """One photo -> one PLY (written atomically).

    Args:
        loaded: from :func:`load_model`.
        image: the photo (any format :mod:`imageio` reads).
        output: the PLY path to write; its folder is created.
        focal_mm, focal_px: focal-length overrides (see :func:`imageio.load_rgb`).
        plain: vertex element only.
        progress: stage callback: ``read_image``, the pipeline's stages, ``ply``.
        cancelled: polled between stages.

    Raises:
        BadImageError, BadRequestError, Cancelled, OutOfMemoryError.
    """
    from ..errors import Cancelled
    from .overflow_guard import predict_guarded
    from .pipeline import save_prediction

    def check(stage: str) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled(f"cancelled before the {stage} stage")

    start = time.perf_counter()
    # Before anything slow: a read-only, full or wrong output must not cost a whole network run.
    guards.prepare_output(output, [image], guards.expected_ply_bytes(expected_gaussians(loaded)))
    if progress is not None:
        progress("read_image", 0.0, guards.safe_name(Path(image).name))
    model, precision, note = loaded.current()
    if note is not None and progress is not None:
        progress("switch", 0.0, note)
    decode_on = precision.decode_device(next(loaded.model.parameters()).device)
    photo = imageio.load_rgb(image, focal_mm=focal_mm, focal_px=focal_px, device=decode_on)
    read_s = time.perf_counter() - start
    # The network stages take almost all the time; leave the first and last 2 % to reading and writing.
    scaled = None if progress is None else _scaled(progress, 0.02, 0.96)
    with loaded.exclusive():
        prediction = predict_guarded(
            model,
            photo.rgb,
            photo.f_px,
            precision=precision,
            eager_model=loaded.model,
            progress=scaled,
            cancelled=cancelled,
        )
    guards.check_finite(prediction.gaussians, image)
    check("ply")
    if progress is not None:
        progress("ply", 0.98, guards.safe_name(Path(output).name))
    with guards.writing(output):
        save_prediction(prediction, output, plain=plain)
    loaded.photo_done()
    timings = {"read_image": read_s, **prediction.timings}
    return FileResult(
        ply=Path(output),
        image_size=(photo.width, photo.height),
        f_px=photo.f_px,
        focal_source=photo.focal_source,
        num_gaussians=prediction.gaussians.num_gaussians,
        timings=timings,
        warnings=[*photo.warnings, *prediction.notes],
        gaussians=prediction.gaussians,
        precision=prediction.precision,
        notes=[*([note] if note else []), *prediction.notes],
    )


def _scaled(progress: StageProgress, offset: float, span: float) -> StageProgress:
    def inner(stage: str, fraction: float | None, message: str) -> None:
        if stage != "done":
            progress(stage, None if fraction is None else offset + span * fraction, message)

    return inner


def find_images(root: Path) -> list[Path]:
    """Every supported image under ``root`` (recursively, suffixes compared case-insensitively), sorted."""
    return find_entries(root)[0]


def find_entries(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(images, rejected): the supported images under ``root`` as :func:`find_images`, and the entries named
    like images that cannot be one (a broken symbolic link), each with the reason."""
    suffixes = imageio.supported_suffixes()
    found: list[Path] = []
    rejected: list[tuple[Path, str]] = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders (.git, .DS_Store, editor backups)
        if path.suffix.lower() not in suffixes:
            continue
        if path.is_file():
            found.append(path)
        elif path.is_symlink() and not path.exists():
            rejected.append((path, "a broken symbolic link (its target does not exist)"))
        # a folder named like a photo (x.jpg/) is searched like any folder
    return sorted(found), sorted(rejected)


def output_paths(inputs: list[Path], root: Path | None, out_dir: Path) -> list[Path]:
    """PLY path for each input: ``out_dir/<sub-folders>/<stem>.ply``, mirroring ``root``.

    Photos that would share a name (``a.jpg`` and ``a.png`` in one folder) keep their suffix in it
    (``a.jpg.ply``, ``a.png.ply``), so nothing is overwritten.
    """
    relative = [Path(p.name) if root is None else p.relative_to(root) for p in inputs]
    plain = [out_dir / r.parent / f"{r.stem}.ply" for r in relative]
    counts = Counter(str(p).lower() for p in plain)  # case-insensitive file systems collide too
    return [
        out_dir / r.parent / f"{r.name}.ply" if counts[str(p).lower()] > 1 else p
        for r, p in zip(relative, plain, strict=True)
    ]


def _download_bar() -> tuple[ProgressCallback, Callable[[], None]]:
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int | None) -> None:
        if not bar:
            bar.append(tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc="checkpoint"))
        bar[0].update(done - bar[0].n)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


@contextlib.contextmanager
def _stage_bar(name: str) -> Iterator[StageProgress]:
    """A per-photo progress bar on stderr showing the current stage (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    with tqdm(total=100, desc=name, unit="%", leave=False, disable=None, bar_format="{desc} {bar} {n:.0f}%") as bar:

        def update(stage: str, fraction: float | None, message: str) -> None:
            bar.set_description_str(f"{name}: {stage}", refresh=False)
            if fraction is not None:
                bar.update(100 * fraction - bar.n)
            else:
                bar.refresh()

        yield update


def _pairs(args: argparse.Namespace, rejected: list[tuple[Path, str]]) -> Iterator[tuple[Path, Path]] | None:
    source = Path(args.input).expanduser()
    out_dir = Path(args.output).expanduser()
    if source.is_dir():
        images, bad = find_entries(source)
        rejected.extend(bad)
        if not images:
            print(f"error: no images found under {safe_name(source)}", file=sys.stderr)
            return None
        return zip(images, output_paths(images, source, out_dir), strict=True)
    if not source.exists():
        print(f"error: {safe_name(source)} does not exist", file=sys.stderr)
        return None
    return iter([(source, out_dir / f"{source.stem}.ply")])


def _reason(image: Path, exc: Exception) -> str:
    text = str(exc) if isinstance(exc, SharpError) else f"{type(exc).__name__}: {exc}"
    name = safe_name(image)
    return text if name in text or str(image) in text else f"{name}: {text}"


def _outcomes(loaded: LoadedModel, jobs: list[tuple[Path, Path]], args: argparse.Namespace) -> Iterator[Any]:
    """batch.BatchItem per photo: a folder overlaps decoding, GPU work and writing; one photo shows its stages."""
    from .batch import BatchItem, predict_many

    options = {"focal_mm": args.focal_mm, "focal_px": args.focal_px, "plain": args.plain_ply}
    if len(jobs) > 1:
        yield from predict_many(loaded, jobs, **options)
        return
    for image, output in jobs:
        item = BatchItem(image, output)
        try:
            with _stage_bar(safe_name(image.name)) as progress:
                item.result = predict_file(loaded, image, output, progress=progress, **options)
        except Exception as exc:
            item.error = exc
        yield item


def run(args: argparse.Namespace) -> int:
    """The ``sharp predict`` command; returns the exit code (0 all written, 1 any failed, 2 nothing to do)."""
    rejected: list[tuple[Path, str]] = []
    pairs = _pairs(args, rejected)
    if pairs is None:
        return 2
    jobs = list(pairs)
    try:  # a folder that cannot take the PLYs is found now, not after the model has loaded and run
        guards.check_folder(Path(args.output).expanduser())
    except SharpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    download, close_bar = _download_bar()
    try:
        loaded = load_model(args.checkpoint, args.device, download=download, precision=args.precision)
    except SharpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        close_bar()
    print(
        f"model: {loaded.preset} preset from {loaded.checkpoint} on {loaded.device}, "
        f"{loaded.precision.name} ({loaded.load_s:.1f} s)"
    )
    failed: list[tuple[Path, str]] = [(path, f"{safe_name(path)}: skipped: {why}") for path, why in rejected]
    for _, reason in failed:
        print(f"  {reason}", file=sys.stderr)
    started = time.perf_counter()
    for number, item in enumerate(_outcomes(loaded, jobs, args), 1):
        image, output, error, result = item.image, item.output, item.error, item.result
        print(f"[{number}/{len(jobs)}] {safe_name(image)} -> {safe_name(output)}", flush=True)
        if isinstance(error, BadImageError):
            print(f"  skipped: {error}", file=sys.stderr)
        elif isinstance(error, SharpError):
            print(f"  failed: {error}", file=sys.stderr)
        elif error is not None:  # one broken photo must not stop the batch; the traceback goes to the log
            logger.error("unexpected error on %s", image, exc_info=error)
            print(f"  failed: {type(error).__name__}: {error}", file=sys.stderr)
        if error is not None:
            failed.append((image, _reason(image, error)))
            continue
        for warning in result.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
        stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.timings.items())
        print(
            f"  {result.num_gaussians:,} Gaussians, {result.image_size[0]}x{result.image_size[1]}, "
            f"f = {result.f_px:.1f} px ({result.focal_source}); {sum(result.timings.values()):.2f} s ({stages})",
            flush=True,
        )
    done, elapsed = len(jobs) + len(rejected) - len(failed), time.perf_counter() - started
    print(
        f"{done} of {len(jobs) + len(rejected)} written in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} images/s)"
    )
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for _, reason in failed:
            print(f"  {reason}", file=sys.stderr)
        return 1
    return 0
