"""The compiled path saved whole (inference.precompiled): one function serves every block, loads in a fresh
process with empty compile caches, falls back to eager for other inputs, and a stored function torch
cannot load is discarded and compiled again.

The full model is precompiled on the GPU machine only (`sharp bench --startup`); here a small ViT block is
compiled for real on the CPU, and the store and fallback logic run on the tiny preset with the compile
replaced.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sharp_sidecar import gaussians
from sharp_sidecar.cli.bench_reference import reference_state_dict
from sharp_sidecar.inference import fastpath, precompiled
from sharp_sidecar.inference.compile_store import CompileStore, compile_key
from sharp_sidecar.inference.precision import get_precision
from sharp_sidecar.inference.warm_start import share_weights_copy
from sharp_sidecar.model.vit import Block

pytestmark = pytest.mark.skipif(not precompiled.supported(), reason="this torch cannot save compiled functions")
FP32 = get_precision("fp32")
KEY = compile_key("fp32", "tiny", 512, None, {"gpu": "cpu", "arch": "cpu"})

FRESH_PROCESS = """
import sys, torch
from sharp_sidecar.inference import precompiled
payload, blocks, x, out = sys.argv[1:5]
function = precompiled.load(open(payload, "rb").read())
blocks, x = torch.load(blocks, weights_only=False), torch.load(x)
with torch.no_grad():
    torch.save([function(block, x) for block in blocks], out)
"""


def _block(seed: int) -> Block:
    torch.manual_seed(seed)
    block = Block(64, 4, 4.0).eval()
    for parameter in block.parameters():
        parameter.data.normal_(0, 0.1)
    return block


@pytest.mark.slow
def test_one_function_serves_every_block_in_a_fresh_process(tmp_path: Path) -> None:
    blocks = [_block(0), _block(1)]
    x = torch.randn(2, 17, 64)
    payload = precompiled.precompile(Block.forward, (blocks[0], x), FP32)
    (tmp_path / "unit.bin").write_bytes(payload)
    torch.save(blocks, tmp_path / "blocks.pt")
    torch.save(x, tmp_path / "x.pt")
    # Empty caches: what runs must come from the saved bytes, not from this process's Inductor cache.
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    files = [str(tmp_path / name) for name in ("unit.bin", "blocks.pt", "x.pt", "out.pt")]
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, *files],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        expected = [block(x) for block in blocks]
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (expected[0] - expected[1]).abs().max() > 0.01  # each block's own weights were used


def test_other_shapes_and_guard_failures_run_eagerly() -> None:
    block = _block(0)
    x = torch.randn(2, 17, 64)
    calls: list[tuple[int, ...]] = []

    def fake(module: Block, tokens: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tokens.shape))
        return torch.zeros_like(tokens)

    call = precompiled.PrecompiledCall(fake, block, precompiled.signature((x,)), "patch_block")
    assert torch.equal(call(x), torch.zeros_like(x)) and calls == [(2, 17, 64)]
    other = torch.randn(3, 17, 64)
    with torch.no_grad():
        torch.testing.assert_close(call(other), block._call_impl(other))  # another batch: the eager module
    assert torch.equal(call(x, None), torch.zeros_like(x))  # a trailing observe=None is not an input
    assert calls == [(2, 17, 64), (2, 17, 64)]

    def refusing(module: Block, tokens: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("GuardManager check failed, reason: grad mode")

    call = precompiled.PrecompiledCall(refusing, block, precompiled.signature((x,)), "patch_block")
    with torch.no_grad():
        torch.testing.assert_close(call(x), block._call_impl(x))


def test_unit_key_names_the_unit_its_inputs_and_the_code() -> None:
    x = torch.randn(2, 17, 64)
    key = precompiled.unit_key(KEY, "patch_block", (x,))
    assert key["unit"] == "patch_block" and key["code"] == precompiled.code_hash() and key["kind"] == "precompiled"
    assert key["inputs"] == "(2, 17, 64)/(1088, 64, 1)/float32"
    assert precompiled.unit_key(KEY, "patch_block", (x.half(),)) != key
    assert precompiled.unit_key(KEY, "patch_block", (x.transpose(0, 1).contiguous().transpose(0, 1),)) != key


def test_stored_functions_load_and_a_refused_one_is_compiled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fastpath.load_predictor(reference_state_dict("tiny"), torch.device("cpu"), FP32)
    store = CompileStore(tmp_path)
    compiled: list[str] = []

    def fake_precompile(function: object, args: tuple[object, ...], precision: object) -> bytes:
        compiled.append(getattr(function, "__qualname__", "?"))
        return b"good"

    def fake_load(payload: bytes) -> object:
        if payload != b"good":
            raise RuntimeError("unpickling failed")
        return lambda module, *args: module._call_impl(*args)

    monkeypatch.setattr(precompiled, "precompile", fake_precompile)
    monkeypatch.setattr(precompiled, "load", fake_load)
    twin, report = precompiled.build_precompiled(share_weights_copy(model), FP32, store, KEY)
    groups = fastpath.compiled_unit_groups(twin)
    assert report.pop("warm_up")["how"] == "ran"  # the installed path ran once before it is handed out
    assert {unit["how"] for unit in report.values()} == {"compiled"} and set(report) == set(groups)
    assert all(isinstance(m._compiled_call_impl, precompiled.PrecompiledCall) for ms in groups.values() for m in ms)
    assert model.feature_model._compiled_call_impl is None  # the loaded model itself stays eager

    # A later start loads every unit; one whose stored bytes torch refuses is compiled again, and only it.
    inputs = precompiled.record_inputs(twin, lambda: fastpath.warm_up(twin, FP32))
    store.write(precompiled.unit_key(KEY, "decoder", inputs["decoder"]), b"bad!", 1.0)  # a record torch refuses
    compiled.clear()
    twin, report = precompiled.build_precompiled(share_weights_copy(model), FP32, store, KEY)
    assert [name for name, unit in report.items() if unit["how"] == "compiled"] == ["decoder"]
    assert {unit["how"] for name, unit in report.items() if name not in ("decoder", "warm_up")} == {"loaded"}
    assert compiled == ["MultiresConvDecoder.forward"]
    gaussians.set_compiled_unproject(None)


def test_choosing_the_precompiled_path_does_not_import_dynamo() -> None:
    # torch._dynamo's import costs 3-4 s on the GPU machine: it belongs in the background build, not in the
    # main thread on the way to the first photo (measured there: model ready 4.8 s -> 7.0 s when it was).
    code = (
        "import sys, torch\n"
        "from sharp_sidecar.cli.bench_reference import reference_state_dict\n"
        "from sharp_sidecar.inference import fastpath\n"
        "from sharp_sidecar.inference.precision import get_precision\n"
        "from sharp_sidecar.inference.warm_start import PathSwitch\n"
        "m = fastpath.load_predictor(reference_state_dict('tiny'), torch.device('cpu'), get_precision('fp16-eager'))\n"
        "switch = PathSwitch(m, get_precision('fp16'))\n"
        "print(switch.precompile, 'torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["True", "False"]
