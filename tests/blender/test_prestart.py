"""Pre-start: drawing the SHARP panel starts the sidecar and loads the model; the first Generate reuses it.

The panel's draw runs against a stand-in layout (bpy as a module draws no UI), which records what it shows.
The fake sidecar counts how many times it loaded its model (``status`` -> ``model_loads``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy

EXTENSION_MODULE = "bl_ext.user_default.sharp_blender"


class _Layout:
    """Accepts any UILayout call; records labels and progress texts."""

    def __init__(self, shown: list[str]) -> None:
        self.shown = shown
        self.enabled = True

    def label(self, text: str = "", **kwargs: Any) -> None:
        self.shown.append(text)

    def progress(self, text: str = "", **kwargs: Any) -> None:
        self.shown.append(text)

    def operator(self, *args: Any, **kwargs: Any) -> Any:
        return type("Op", (), {})()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: self


def _draw_panel(sharp: ModuleType) -> list[str]:
    shown: list[str] = []
    panel = type("Panel", (), {"layout": _Layout(shown)})()
    sharp.ui.SHARP_PT_generate.draw(panel, bpy.context)
    return shown


def _prefs() -> Any:
    return bpy.context.preferences.addons[EXTENSION_MODULE].preferences


def test_panel_draw_prestarts_and_generate_reuses_the_model(
    sharp: ModuleType,
    clean_scene: bpy.types.Scene,
    fake_sidecar: Callable[..., None],
    make_photo: Callable[..., Path],
    tmp_path: Path,
) -> None:
    import importlib

    sharp.ui = importlib.import_module(f"{EXTENSION_MODULE}.ui")
    fake_sidecar("--load-delay", "1.0")
    _prefs().prestart = "PANEL"
    try:
        shown = _draw_panel(sharp)
        state = sharp.jobs.PRESTART
        assert state is not None and state.job is not None and sharp.jobs._client.running
        shown = _draw_panel(sharp)  # drawn again while loading: no second request, the progress shows
        assert sharp.jobs.PRESTART is state
        assert any(text.startswith("Loading model") for text in shown), shown
        state.job.wait(20)
        assert state.result["loaded"] is True and not state.error
        assert not any(text.startswith("Loading model") for text in _draw_panel(sharp))
        photo = make_photo(tmp_path / "first.png", 16, 12)
        assert bpy.ops.sharp.predict(filepath=str(photo)) == {"FINISHED"}
        assert "first" in bpy.data.objects
        status = sharp.jobs._client.status()
        assert status["model_loads"] == 1  # the first Generate found the pre-started model
    finally:
        _prefs().prestart = "AUTO"


def test_prestart_off_starts_nothing(
    sharp: ModuleType, clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None]
) -> None:
    import importlib

    sharp.ui = importlib.import_module(f"{EXTENSION_MODULE}.ui")
    _prefs().prestart = "OFF"
    try:
        _draw_panel(sharp)
        assert sharp.jobs.PRESTART is None
        assert sharp.jobs._client is None or not sharp.jobs._client.running
    finally:
        _prefs().prestart = "AUTO"


def test_file_load_prestarts_when_asked(
    sharp: ModuleType, clean_scene: bpy.types.Scene, fake_sidecar: Callable[..., None], tmp_path: Path
) -> None:
    _prefs().prestart = "FILE_LOAD"
    try:
        path = tmp_path / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path))
        bpy.ops.wm.open_mainfile(filepath=str(path))  # load_post runs the add-on's handler
        state = sharp.jobs.PRESTART
        assert state is not None and state.job is not None
        state.job.wait(20)
        assert sharp.jobs._client.status()["model_loads"] == 1
    finally:
        _prefs().prestart = "AUTO"
