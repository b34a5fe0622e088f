"""Instant start on the CPU: the eager-to-compiled path switch, the compile store's keys and damage handling,
and the overflow fallback (an inf injected into the fp16 decoder's output).

The compile itself only runs on CUDA (`sharp bench --startup` on the GPU machine measures it); here the
background build is a stand-in that shares the weights as the real one does, so the switch logic, the
thread hand-over and the store are the real code.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sharp_sidecar.cli.bench_reference import reference_state_dict
from sharp_sidecar.inference import compile_store, fastpath, predict
from sharp_sidecar.inference.compile_store import CompileStore, compile_key
from sharp_sidecar.inference.overflow_guard import predict_guarded, weights_as
from sharp_sidecar.inference.pipeline import predict as run_predict
from sharp_sidecar.inference.precision import eager_twin, get_precision, resolve_precision
from sharp_sidecar.inference.warm_start import PathSwitch, share_weights_copy
from torch import nn

CPU = torch.device("cpu")
GPU_A = {"gpu": "NVIDIA H200", "arch": "sm_90"}
SOFTWARE = {"torch": "2.11.0+cu130", "cuda": "13.0", "triton": "3.6.0"}


@pytest.fixture(scope="module")
def tiny_fp16() -> nn.Module:
    return fastpath.load_predictor(reference_state_dict("tiny"), CPU, get_precision("fp16-eager"))


def _photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(0, 255, (8, 10, 3)), np.ones((8, 8, 1))).astype(np.uint8)


def _key(**changes: str) -> dict[str, str]:
    software = {**SOFTWARE, **{k: v for k, v in changes.items() if k in SOFTWARE}}
    device = {**GPU_A, **{k: v for k, v in changes.items() if k in GPU_A}}
    return compile_key(changes.get("precision", "fp16"), "default", 1536, None, device, software)


# -- the compile store ----------------------------------------------------------------------------------


def test_key_changes_with_torch_gpu_policy_and_shape(tmp_path: Path) -> None:
    store = CompileStore(tmp_path)
    base = _key()
    store.write(base, b"artifacts", 12.5)
    others = [_key(torch="2.12.0+cu130"), _key(gpu="NVIDIA H100 80GB HBM3"), _key(arch="sm_89"), _key(precision="bf16")]
    assert len({store.path(k) for k in [base, *others]}) == 5  # one file per configuration
    for key in others:
        assert store.read(key) is None  # nothing compiled for another torch, GPU or policy is offered
    entry = store.read(base)
    assert entry is not None and entry.payload == b"artifacts" and entry.seconds == 12.5 and entry.status == "ok"
    shape = compile_key("fp16", "default", 1024, None, GPU_A, SOFTWARE)
    assert store.path(shape) != store.path(base)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "flipped", "garbage", "empty", "foreign_key", "bad_header"],
)
def test_damaged_record_is_discarded_and_rebuilt(tmp_path: Path, damage: str) -> None:
    store = CompileStore(tmp_path)
    key = _key()
    path = store.write(key, b"x" * 1000, 3.0)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-10])
    elif damage == "flipped":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff" * 50)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign_key":  # a valid record of another configuration under this key's name
        other = store.write(_key(gpu="NVIDIA A100"), b"y", 1.0)
        other.replace(path)
    else:
        path.write_bytes(compile_store.MAGIC + b"\x05\x00\x00\x00{nope" + b"x" * 1000)
    assert store.read(key) is None
    assert not path.exists()  # deleted, so the next compile writes a fresh one
    store.write(key, b"rebuilt", 4.0)
    entry = store.read(key)
    assert entry is not None and entry.payload == b"rebuilt"


def test_payload_torch_refuses_is_discarded(tmp_path: Path) -> None:
    store = CompileStore(tmp_path)
    key = _key()
    store.write(key, b"not a torch mega-cache payload", 2.0)
    entry = store.read(key)
    assert entry is not None
    assert compile_store.load_artifacts(store, key, entry) is False  # no exception escapes
    assert store.read(key) is None


# -- the path switch ------------------------------------------------------------------------------------


class _Builder:
    """Stands in for build_compiled: shares the weights, then waits until the test lets it finish."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.fail = fail

    def __call__(self, model: nn.Module, precision: object) -> nn.Module:
        self.calls += 1
        assert self.release.wait(30)
        if self.fail is not None:
            raise self.fail
        return share_weights_copy(model)


def test_photos_run_eager_until_the_compiled_path_is_ready(tmp_path: Path, tiny_fp16: nn.Module) -> None:
    compiled = get_precision("fp16")
    builder = _Builder()
    stages: list[tuple[str, str]] = []
    switch = PathSwitch(tiny_fp16, compiled, store=CompileStore(tmp_path), builder=builder, device=CPU)
    switch.start(lambda stage, fraction, message: stages.append((stage, message)))
    assert stages[0][0] == "compile" and "background" in stages[0][1]
    model, policy, note = switch.current()
    assert model is tiny_fp16 and policy.name == "fp16-eager" and not policy.compile and note is None
    assert not policy.cudnn_benchmark  # the first photo never waits for cuDNN's algorithm search
    eager = run_predict(model, _photo(), 60.0, precision=policy)
    builder.release.set()
    assert switch.wait(30)
    model, policy, note = switch.current()
    assert model is not tiny_fp16 and policy is compiled and note is not None and "switched" in note
    assert all(a is b for a, b in zip(model.parameters(), tiny_fp16.parameters(), strict=True))  # no 2nd copy
    assert switch.current()[2] is None  # announced once
    after = run_predict(model, _photo(), 60.0, precision=policy)
    assert torch.equal(after.gaussians.means, eager.gaussians.means)  # same function on either path
    entry = switch.store.read(switch.key)
    assert entry is not None and entry.status == "ok"
    # the next process knows how long the build takes, for its progress message
    again = PathSwitch(tiny_fp16, compiled, store=switch.store, builder=_Builder(), device=CPU)
    messages: list[str] = []
    again.start(lambda stage, fraction, message: messages.append(message))
    assert again.expected_s is not None and "last time" in messages[0]
    again.builder.release.set()  # type: ignore[attr-defined]
    assert again.wait(30)


def test_failed_compile_keeps_eager_and_is_not_retried(tmp_path: Path, tiny_fp16: nn.Module) -> None:
    store = CompileStore(tmp_path)
    builder = _Builder(fail=RuntimeError("no C compiler found"))
    builder.release.set()
    switch = PathSwitch(tiny_fp16, get_precision("fp16"), store=store, builder=builder, device=CPU)
    switch.start()
    assert not switch.wait(30)
    assert switch.state == "failed" and "no C compiler" in switch.error
    assert switch.current()[0] is tiny_fp16
    second = _Builder()
    retry = PathSwitch(tiny_fp16, get_precision("fp16"), store=store, builder=second, device=CPU)
    retry.start()
    assert retry.state == "failed" and second.calls == 0  # same torch and GPU: not tried again
    other_key = PathSwitch(tiny_fp16, get_precision("bf16"), store=store, builder=second, device=CPU)
    second.release.set()
    other_key.start()
    assert other_key.wait(30) and second.calls == 1  # another policy (or torch, or GPU) tries


def test_out_of_memory_during_the_build_is_not_recorded(tmp_path: Path, tiny_fp16: nn.Module) -> None:
    builder = _Builder(fail=RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    builder.release.set()
    switch = PathSwitch(tiny_fp16, get_precision("fp16"), store=CompileStore(tmp_path), builder=builder, device=CPU)
    switch.start()
    assert not switch.wait(30)
    assert switch.store.read(switch.key) is None  # a transient failure: the next start tries again


def test_loaded_model_hands_out_the_current_path(tmp_path: Path, tiny_fp16: nn.Module) -> None:
    switch = PathSwitch(tiny_fp16, get_precision("fp16"), store=CompileStore(tmp_path), builder=_Builder(), device=CPU)
    loaded = predict.LoadedModel(tiny_fp16, CPU, tmp_path / "c.pt", "tiny", 0.1, switch.eager_precision, switch)
    switch.start()
    assert loaded.current()[1].name == "fp16-eager"
    switch.builder.release.set()  # type: ignore[attr-defined]
    switch.wait(30)
    assert loaded.current()[1].name == "fp16"
    plain = predict.LoadedModel(tiny_fp16, CPU, tmp_path / "c.pt", "tiny", 0.1, None)
    assert plain.current() == (tiny_fp16, get_precision("fp32"), None)


def test_policies() -> None:
    assert eager_twin(get_precision("fp16")).name == "fp16-eager"
    assert eager_twin(get_precision("bf16-graphs")).name == "bf16-eager"
    assert get_precision("fp16").fallback == "bf16-eager" and get_precision("bf16").fallback == "fp32"
    assert get_precision("fp32").fallback is None
    assert resolve_precision("auto", CPU).name == "fp32"


# -- the overflow guard ---------------------------------------------------------------------------------


def test_weights_as_swaps_only_this_tree(tiny_fp16: nn.Module) -> None:
    twin = share_weights_copy(tiny_fp16)
    before = [p.data_ptr() for p in tiny_fp16.parameters()]
    with weights_as(tiny_fp16, torch.bfloat16):
        assert {p.dtype for p in tiny_fp16.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in twin.parameters()} == {torch.float16}
    assert [p.data_ptr() for p in tiny_fp16.parameters()] == before
    assert {p.dtype for p in tiny_fp16.parameters()} == {torch.float16}


def test_inf_in_fp16_decoder_output_is_recomputed_in_bf16(tiny_fp16: nn.Module) -> None:
    policy = get_precision("fp16-eager")

    def overflow(module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        if output.dtype == torch.float16:  # only the fp16 run overflows, as a too-large activation would
            output = output.clone()
            output[..., :4, :4] = torch.inf
        return output

    handle = tiny_fp16.prediction_head.register_forward_hook(overflow)
    stages: list[str] = []
    try:
        result = predict_guarded(
            tiny_fp16, _photo(1), 60.0, precision=policy, progress=lambda s, f, m: stages.append(s)
        )
    finally:
        handle.remove()
    assert result.finite and result.precision == "bf16-eager"
    assert any("overflowed" in note and "bf16-eager" in note for note in result.notes)
    assert "fallback" in stages
    g = result.gaussians
    assert all(torch.isfinite(t).all() for t in (g.means, g.singular_values, g.colors, g.opacities))
    with weights_as(tiny_fp16, torch.bfloat16):
        direct = run_predict(tiny_fp16, _photo(1), 60.0, precision=get_precision("bf16-eager"))
    assert torch.equal(direct.gaussians.means, g.means)  # exactly the bf16 result, and fp16 weights are back
    assert {p.dtype for p in tiny_fp16.parameters()} == {torch.float16}
    clean = predict_guarded(tiny_fp16, _photo(1), 60.0, precision=policy)
    assert clean.finite and clean.precision == "fp16-eager" and not clean.notes
    rel = (clean.gaussians.means - g.means).norm() / g.means.norm()
    assert rel < 0.05  # fp16 and its bf16 fallback compute the same function within bf16's tolerance


# -- the server's load op (the add-on's pre-start) --------------------------------------------------------


def test_load_op_loads_once_and_predict_reuses_it(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from sharp_sidecar.io import protocol
    from sharp_sidecar.serve import jobs
    from sharp_sidecar.serve.jobs import Job, JobContext, ModelCache, load_op

    models, state, sent = ModelCache(), {}, []
    params = {"checkpoint": str(tiny_checkpoint), "device": "cpu"}
    first = load_op(JobContext(Job("1", protocol.LOAD, dict(params)), sent.append, models, state))
    assert first["loaded"] is True and first["device"] == "cpu" and first["precision"] == "fp32"
    assert "warm_up" in [m.get("stage") for m in sent]
    again = load_op(JobContext(Job("2", protocol.LOAD, dict(params)), sent.append, models, state))
    assert again["loaded"] is False  # already loaded: nothing done twice
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.fromarray(_photo()).save(photo)
    request = {**params, "image": str(photo), "output": str(tmp_path / "p.ply")}
    result = jobs.predict_op(JobContext(Job("3", protocol.PREDICT, request), sent.append, models, state))
    assert "load_model" not in result["timings"]  # the predict found the pre-loaded model
    assert result["precision"] == "fp32" and Path(result["ply"]).is_file()


# -- sharp bench --startup (the GPU run is scripts/gpu_startup.sh; here its report and argument checks) ---


def test_startup_table_and_unknown_case(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from sharp_sidecar.cli import bench_startup

    report = {
        "cases": {
            "cold": {
                "python": {"t": 0.1},
                "torch": {"t": 4.0},
                "model_ready": {"t": 4.7},
                "first_ply": {"t": 6.9, "precision": "fp16-eager"},
                "compiled_ready": {"t": 64.4, "photos": 3, "photo_s": [0.2, 0.3, 0.1]},
                "steady": {"photo_to_ply_s": [0.08, 0.07, 0.09], "precision": "fp16"},
                "returncode": 0,
            },
            "fp32": {"first_ply": {"t": 7.3, "precision": "fp32"}, "returncode": 0},
        }
    }
    table = bench_startup.format_table(report).splitlines()
    first_ply = next(line for line in table if "first PLY on disk" in line).split()
    assert first_ply[-2:] == ["6.90", "7.30"]
    assert next(line for line in table if "then photo -> PLY" in line).split()[-2:] == ["80.0", "-"]
    args = argparse.Namespace(cases="cold,lukewarm", max_wait=1.0)
    assert bench_startup.run(args) == 2
    assert "lukewarm" in capsys.readouterr().err
