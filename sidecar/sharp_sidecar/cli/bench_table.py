"""`sharp bench`'s report as a fixed-width table: one row per measure, one column per precision."""

from __future__ import annotations

from typing import Any

PHOTO_STAGES = ("decode", "resize", "encoder", "decoders", "composer", "unprojection", "ply")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table: one row per measure, one column per precision (times in ms, medians)."""
    paths = report["paths"]
    names = list(paths)
    rows: list[tuple[str, list[str]]] = []
    for stage in PHOTO_STAGES:
        rows.append((f"  {stage}", [_ms(paths[n].get(f"stage_{stage}_s")) for n in names]))
    rows.append(("  decoder", [paths[n].get("decoder", "-") for n in names]))
    for part in ("columns", "quantiles", "write", "write_replacing"):
        rows.append((f"    ply: {part}", [_ms(paths[n].get(f"stage_ply_{part}_s")) for n in names]))
    rows += [
        ("forward (events)", [_ms(paths[n].get("forward_s")) for n in names]),
        ("photo -> Gaussians", [_ms(paths[n].get("photo_to_gaussians_s")) for n in names]),
        ("photo -> PLY", [_ms(paths[n].get("photo_to_ply_s")) for n in names]),
        ("checkpoint -> device", [_ms(paths[n]["load_s"]) for n in names]),
        ("compile + warm-up", [_ms(paths[n]["prepare_s"]) for n in names]),
        ("first photo", [_ms(paths[n]["first_call_s"]) for n in names]),
        ("folder, images/s", [f"{paths[n].get('batch_images_per_s', 0):.2f}" for n in names]),
        ("peak memory GiB", [f"{paths[n]['peak_gib']:.2f}" for n in names]),
        ("weights GiB", [f"{paths[n]['weights_gib']:.2f}" for n in names]),
    ]
    for key in ("means", "covariances", "colors", "opacities"):
        rows.append(
            (f"rel L2 {key}", [f"{paths[n]['errors'][key]:.1e}" if "errors" in paths[n] else "-" for n in names])
        )
    rows.append(
        (
            "render PSNR min/mean",
            [
                f"{paths[n]['render']['psnr_min_db']:.1f}/{paths[n]['render']['psnr_mean_db']:.1f}"
                if "render" in paths[n]
                else "-"
                for n in names
            ],
        )
    )
    width = max(len(r[0]) for r in rows) + 2
    col = max(12, *(len(n) + 2 for n in names))
    lines = [f"{'(ms, median of ' + str(report['runs']) + ')':<{width}}" + "".join(f"{n:>{col}}" for n in names)]
    lines += [f"{label:<{width}}" + "".join(f"{v:>{col}}" for v in values) for label, values in rows]
    return "\n".join(lines)
