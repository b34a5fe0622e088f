"""3DGS PLY files, read and written with numpy alone (no Python loop over rows).

Shared by the add-on (import/export) and the sidecar (shipped as ``sharp_sidecar.io.ply``).

SHARP's layout (see ``../shared/spec/sharp-model.md`` section 8): a ``vertex`` element with the 14
float properties of :data:`SHARP_VERTEX_PROPERTIES`, then the one-property metadata elements
``extrinsic`` (16 f32), ``intrinsic`` (9 f32), ``image_size`` (2 u32), ``frame`` (2 i32),
``disparity`` (2 f32), ``color_space`` (1 u8; 0 = sRGB, 1 = linear) and ``version`` (3 u8).
The reader also takes generic 3DGS PLYs: extra vertex properties (``f_rest_*``, normals, ...), any
property and element order, either byte order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path

SHARP_VERTEX_PROPERTIES = (
    "x", "y", "z",
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
SHARP_PLY_VERSION = (1, 5, 0)
COLOR_SPACE_SRGB = 0
COLOR_SPACE_LINEAR = 1

# PLY type names (both spellings) -> numpy kinds; the first name of each is what the writer uses.
_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
_WRITE_NAMES = {
    "i1": "char",
    "u1": "uchar",
    "i2": "short",
    "u2": "ushort",
    "i4": "int",
    "u4": "uint",
    "f4": "float",
    "f8": "double",
}
_MAX_HEADER = 1 << 20
_TRANSPOSE_ROWS = 8192


class PlyError(ValueError):
    """The file is not a PLY this module can read; the message says what is wrong."""


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy kind such as "f4"); list properties are ("name", "list")


@dataclass
class PlyContents:
    """All readable elements of a PLY as structured numpy arrays (native byte order)."""

    path: Path
    elements: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)  # elements after an unreadable (list) element

    @property
    def vertex(self) -> np.ndarray:
        return self.elements["vertex"]

    def column(self, name: str, dtype: str = "f4") -> np.ndarray:
        """One vertex property as a contiguous 1-D array."""
        return np.ascontiguousarray(self.vertex[name], dtype=dtype)

    def scalar_element(self, name: str) -> np.ndarray | None:
        """The values of a one-property metadata element such as ``intrinsic``, or None if absent."""
        element = self.elements.get(name)
        if element is None or element.dtype.names is None:
            return None
        return np.asarray(element[element.dtype.names[0]])


_CONVERT = "convert it to a PLY with PlayCanvas splat-transform (splat-transform INPUT OUTPUT.ply)"


def foreign_format_hint(path: Path, head: bytes) -> str | None:
    """Which other splat format a non-PLY file looks like, and how to convert it; None if unknown."""
    suffix = path.suffix.lower()
    if head.startswith(b"\x1f\x8b") or head.startswith(b"NGSP") or suffix == ".spz":
        return f"it looks like a Niantic SPZ file (gzip-compressed splats); {_CONVERT}"
    if head.startswith(b"PK\x03\x04") or suffix == ".sog":
        return f"it looks like a zip archive such as PlayCanvas SOG (.sog); {_CONVERT}"
    if suffix == ".ksplat":
        return f"it looks like a GaussianSplats3D .ksplat file; {_CONVERT}"
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if suffix == ".splat" or (size and size % 32 == 0 and b"\n" not in head[:64]):
        return f"it looks like an antimatter15 .splat file (32 bytes a splat, no header); {_CONVERT}"
    return None


def _parse_header(path: Path, head: bytes) -> tuple[str, list[PlyElement], int]:
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        hint = foreign_format_hint(path, head)
        raise PlyError(
            f"{path}: not a PLY file (no 'ply' magic or no 'end_header' in the first MiB)"
            + (f"; {hint}" if hint else "")
        )
    newline = head.find(b"\n", end)
    if newline < 0:
        raise PlyError(f"{path}: the header is cut off after 'end_header'")
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    fmt = ""
    elements: list[PlyElement] = []
    for number, raw in enumerate(lines[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else ""
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(PlyElement(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list" and len(words) == 5:
                elements[-1].properties.append((words[4], "list"))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                if any(name == words[2] for name, _ in elements[-1].properties):
                    raise PlyError(
                        f"{path}: header line {number}: element '{elements[-1].name}' has two properties named "
                        f"{words[2]!r}; a PLY's property names must differ. Re-export the file from its source"
                    )
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise PlyError(f"{path}: header line {number} has an unknown property type: {raw!r}")
        else:
            raise PlyError(f"{path}: header line {number} is not valid PLY: {raw!r}")
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise PlyError(
            f"{path}: PLY format {fmt or 'missing'!r} is not supported; save the file as binary PLY "
            "(every 3DGS tool writes binary_little_endian)"
        )
    return fmt, elements, newline + 1


def read_ply(path: str | os.PathLike[str]) -> PlyContents:
    """Read every element up to the first one with list properties (whose size needs a row scan)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_MAX_HEADER)
    except OSError as exc:
        raise PlyError(f"cannot open {path}: {exc.strerror or exc}") from exc
    fmt, declared, offset = _parse_header(path, head)
    order = "<" if fmt == "binary_little_endian" else ">"
    size = path.stat().st_size
    raw = np.memmap(path, dtype=np.uint8, mode="r") if size > offset else np.zeros(0, np.uint8)
    elements: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for i, element in enumerate(declared):
        if any(kind == "list" for _, kind in element.properties):
            skipped = [e.name for e in declared[i:]]
            break
        dtype = np.dtype([(name, order + kind) for name, kind in element.properties])
        nbytes = dtype.itemsize * element.count
        if offset + nbytes > size:
            raise PlyError(
                f"{path}: the file is truncated: element '{element.name}' needs {nbytes} bytes at offset {offset}, "
                f"but the file has {size} bytes"
            )
        if nbytes == 0:  # an empty element (e.g. 0 vertices) may sit past the end of the file's bytes
            data = np.zeros(0, dtype=dtype)
        else:
            data = np.frombuffer(raw, dtype=dtype, count=element.count, offset=offset)
        elements[element.name] = data if order == "<" or dtype.itemsize == 0 else data.astype(dtype.newbyteorder("="))
        offset += nbytes
    if "vertex" not in elements:
        raise PlyError(f"{path}: no readable 'vertex' element")
    return PlyContents(path, elements, skipped)


def _header(elements: Sequence[tuple[str, np.ndarray]]) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"]
    for name, array in elements:
        lines.append(f"element {name} {len(array)}")
        assert array.dtype.names is not None
        for prop in array.dtype.names:
            kind = array.dtype[prop].kind + str(array.dtype[prop].itemsize)
            if kind not in _WRITE_NAMES:
                raise ValueError(f"cannot write property {name}.{prop} of dtype {array.dtype[prop]}")
            lines.append(f"property {_WRITE_NAMES[kind]} {prop}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def structured(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Columns (name -> 1-D array, all the same length) -> one little-endian structured array."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns have different lengths: { {k: len(v) for k, v in columns.items()} }")
    dtype = np.dtype([(name, np.asarray(v).dtype.newbyteorder("<")) for name, v in columns.items()])
    rows = lengths.pop()
    out = np.empty(rows, dtype=dtype)
    if all(dtype[name] == np.dtype("<f4") for name in columns) and dtype.itemsize == 4 * len(columns):
        # All float32 (every 3DGS layout): fill the (rows, properties) view a block at a time, a transposed
        # copy per block; writing each field's strided column on its own is ~3x slower.
        table = out.view(np.float32).reshape(rows, len(columns))
        arrays = list(columns.values())
        block = np.empty((len(arrays), _TRANSPOSE_ROWS), dtype=np.float32)
        for start in range(0, rows, _TRANSPOSE_ROWS):
            stop = min(rows, start + _TRANSPOSE_ROWS)
            for i, values in enumerate(arrays):
                block[i, : stop - start] = values[start:stop]
            table[start:stop] = block[:, : stop - start].T
        return out
    for name, values in columns.items():
        out[name] = values
    return out


def metadata_element(name: str, values: Sequence[float] | np.ndarray, dtype: str) -> tuple[str, np.ndarray]:
    """A one-property element named like its property, as SHARP writes metadata."""
    return name, structured({name: np.asarray(values, dtype=dtype).ravel()})


def write_ply(
    path: str | os.PathLike[str], vertex: np.ndarray, extra_elements: Sequence[tuple[str, np.ndarray]] = ()
) -> None:
    """Write binary little-endian PLY atomically. ``vertex`` and extras are structured arrays."""
    elements = [("vertex", vertex), *extra_elements]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(_header(elements))
        for _, array in elements:
            # As bytes: the buffer protocol refuses field names with ':' (e.g. "radiance:base").
            if array.nbytes:
                fh.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)


def sharp_metadata(
    f_px: float, image_size: tuple[int, int], num_gaussians: int, disparity_quantiles: Sequence[float]
) -> list[tuple[str, np.ndarray]]:
    """SHARP's seven metadata elements, in file order."""
    width, height = image_size
    return [
        metadata_element("extrinsic", np.eye(4), "f4"),
        metadata_element("intrinsic", [f_px, 0, width / 2, 0, f_px, height / 2, 0, 0, 1], "f4"),
        metadata_element("image_size", [width, height], "u4"),
        metadata_element("frame", [1, num_gaussians], "i4"),
        metadata_element("disparity", disparity_quantiles, "f4"),
        metadata_element("color_space", [COLOR_SPACE_SRGB], "u1"),
        metadata_element("version", SHARP_PLY_VERSION, "u1"),
    ]


@dataclass
class SplatCamera:
    """The source camera stored in a SHARP PLY (OpenCV convention)."""

    K: np.ndarray  # (3, 3) float64
    image_size: tuple[int, int]  # (W, H) pixels
    extrinsic: np.ndarray  # (4, 4) world-to-camera


@dataclass
class SplatData:
    """A 3DGS PLY's Gaussians as typed arrays, exactly as stored (no activation applied)."""

    means: np.ndarray  # (N, 3) f32
    f_dc: np.ndarray  # (N, 3) f32, SH DC of the colour
    opacity_logits: np.ndarray  # (N,) f32
    log_scales: np.ndarray  # (N, 3) f32
    quats_wxyz: np.ndarray  # (N, 4) f32, as stored (not normalised)
    ply: PlyContents
    camera: SplatCamera | None
    color_space: int | None  # 0 sRGB, 1 linear, None when the file does not say

    @property
    def count(self) -> int:
        return len(self.means)


REQUIRED_GAUSSIAN_PROPERTIES = SHARP_VERTEX_PROPERTIES


def camera_from_metadata(ply: PlyContents) -> SplatCamera | None:
    """The source camera from the intrinsic / image_size / extrinsic elements (also legacy forms), or None."""
    intrinsic = ply.scalar_element("intrinsic")
    size = ply.scalar_element("image_size")
    extrinsic = ply.scalar_element("extrinsic")
    if intrinsic is None:
        return None
    if intrinsic.size == 9 and size is not None and size.size == 2:
        K = intrinsic.astype(np.float64).reshape(3, 3)
        wh = (int(size[0]), int(size[1]))
    elif intrinsic.size == 4 and size is None:  # legacy [fx, fy, W, H]
        fx, fy, w, h = (float(v) for v in intrinsic)
        K = np.array([[fx, 0, w / 2], [0, fy, h / 2], [0, 0, 1]], dtype=np.float64)
        wh = (int(w), int(h))
    else:
        return None
    E = np.eye(4)
    if extrinsic is not None and extrinsic.size == 16:
        E = extrinsic.astype(np.float64).reshape(4, 4)
    elif extrinsic is not None and extrinsic.size == 12:  # legacy 3x4 with the 3x3 part transposed
        m = extrinsic.astype(np.float64).reshape(3, 4)
        E[:3, :3] = m[:, :3].T
        E[:3, 3] = m[:, 3]
    if wh[0] <= 0 or wh[1] <= 0 or not (np.isfinite(K).all() and np.isfinite(E).all()) or K[0, 0] <= 0 or K[1, 1] <= 0:
        return None  # NaN / infinite / non-positive intrinsics would make a camera with lens = NaN
    return SplatCamera(K, wh, E)


def read_gaussians(path: str | os.PathLike[str]) -> SplatData:
    """Read a 3DGS PLY (SHARP's, plain, or generic). Raises PlyError naming what is missing."""
    ply = read_ply(path)
    names = set(ply.vertex.dtype.names or ())
    missing = [p for p in REQUIRED_GAUSSIAN_PROPERTIES if p not in names]
    if missing:
        raise PlyError(
            f"{ply.path}: not a 3D Gaussian splat PLY: vertex properties {', '.join(missing)} are missing "
            f"(found: {', '.join(sorted(names)) or 'none'})"
        )

    def cols(*props: str) -> np.ndarray:
        return np.stack([ply.vertex[p] for p in props], axis=1).astype(np.float32, copy=False)

    color_space = ply.scalar_element("color_space")
    return SplatData(
        means=cols("x", "y", "z"),
        f_dc=cols("f_dc_0", "f_dc_1", "f_dc_2"),
        opacity_logits=ply.column("opacity"),
        log_scales=cols("scale_0", "scale_1", "scale_2"),
        quats_wxyz=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        ply=ply,
        camera=camera_from_metadata(ply),
        color_space=int(color_space[0]) if color_space is not None and color_space.size else None,
    )
