"""What predicting one photo produced: shared by :mod:`.predict` (one photo) and :mod:`.batch` (a folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FileResult:
    """What one photo produced (the server's ``predict`` result, as a dict via :meth:`as_dict`)."""

    ply: Path
    image_size: tuple[int, int]
    f_px: float
    focal_source: str
    num_gaussians: int
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    gaussians: Any = field(default=None, repr=False)  # gaussians.Gaussians, metric (not in as_dict)
    precision: str = ""  # the policy that computed it (a fallback's name after an overflow)
    notes: list[str] = field(default_factory=list)  # how it was computed: a path switch, a recomputation

    def as_dict(self) -> dict[str, Any]:
        return {
            "ply": str(self.ply),
            "image_size": list(self.image_size),
            "f_px": self.f_px,
            "focal_source": self.focal_source,
            "num_gaussians": self.num_gaussians,
            "timings": self.timings,
            "warnings": self.warnings,
            "precision": self.precision,
            "notes": self.notes,
        }


def expected_gaussians(loaded: Any) -> int:
    """How many Gaussians the loaded model makes per photo (two layers of (R/2)^2), for the free-space check."""
    config = getattr(loaded.model, "config", None)
    resolution = int(getattr(config, "resolution", 1536))
    return 2 * (resolution // 2) ** 2
