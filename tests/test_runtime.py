"""The automatic precision follows the CPU's flags; evaluation stays exact (fp32) unless asked otherwise.

The flags are faked (``/proc/cpuinfo`` as a bf16 machine or an AVX2-only one reports them), so these
tests check the same rule on every CI machine whatever its own CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dunemap.cli import main
from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import load_checkpoint, save_checkpoint
from dunemap.runtime import Predictor, bf16_supported, resolve_precision
from dunemap.runtime.device import cpu_info, describe_cpu

CPU = torch.device("cpu")
BF16_FLAGS = {"avx512_bf16": "fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16",
              "amx_bf16": "fpu sse4_2 avx avx2 fma amx_bf16 amx_tile amx_int8"}
AVX2_FLAGS = "fpu sse4_2 avx avx2 fma f16c"


@pytest.fixture
def cpu_flags(monkeypatch):
    """``cpu_flags("a b c")``: from now on /proc/cpuinfo reads as a CPU with those flags (other files as they are)."""
    real = Path.read_text

    def fake(flags: str) -> None:
        def read_text(self, *args, **kwargs):
            if str(self) == "/proc/cpuinfo":
                return "".join(f"processor\t: {i}\nflags\t\t: {flags}\n\n" for i in range(2))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", read_text)

    return fake


@pytest.mark.parametrize("flag", sorted(BF16_FLAGS))
def test_auto_is_bf16_where_the_cpu_has_native_bf16(cpu_flags, flag: str) -> None:
    cpu_flags(BF16_FLAGS[flag])
    assert bf16_supported(CPU)
    assert resolve_precision("auto", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"  # an explicit choice is kept


@pytest.mark.parametrize("flags", [AVX2_FLAGS, "fpu avx2 avx512f avx512bw avx512_vnni"])
def test_auto_is_fp32_on_a_cpu_without_bf16(cpu_flags, flags: str) -> None:
    cpu_flags(flags)
    assert not bf16_supported(CPU)
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"  # asked for: emulated, but honoured


def test_the_cpu_is_named_with_its_speed_flags_in_one_place(cpu_flags) -> None:
    """cpu_info reads the model name and speed flags from /proc/cpuinfo text; the benchmarks' reports and the
    demo's environment record describe the CPU with it (describe_cpu), bf16_supported reads the same flags."""
    text = ("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni "
            "amx_int8\n\nprocessor\t: 1\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse2 avx2\n")
    info = cpu_info(text)
    assert info == {"model": "Example CPU @ 2.0GHz", "flags": ["AVX2", "AVX-512F", "AVX512-VNNI", "AMX-INT8"]}
    assert describe_cpu(info) == "Example CPU @ 2.0GHz (AVX2, AVX-512F, AVX512-VNNI, AMX-INT8)"
    assert "none of AVX2" in describe_cpu(cpu_info("model name : Old CPU\nflags : fpu sse2\n"))
    assert cpu_info("")["flags"] == [] and cpu_info("")["model"]  # the platform's name where there is no file
    cpu_flags(BF16_FLAGS["amx_bf16"])
    assert cpu_info()["flags"] == ["AVX2", "AMX-BF16", "AMX-INT8"] and bf16_supported(CPU)
    assert describe_cpu().endswith("(AVX2, AMX-BF16, AMX-INT8)")
    from dunemap.demo import _environment

    assert _environment("auto") == {"cpu": describe_cpu(), "threads": torch.get_num_threads(),
                                    "torch": torch.__version__, "precision": "bf16"}


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """A random 4-class, 16-band mit_tiny with the tiny dataset's class names."""
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=4, in_channels=16, text_dim=8).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(4, 8), dim=1))
    colors = [tuple(c) for c in load_catalog().colors[:4]]
    return save_checkpoint(tmp_path / "w.pth", model, [f"blob_{i}" for i in range(4)], colors)


def test_auto_predictor_follows_the_flags(cpu_flags, tiny_weights: Path) -> None:
    cpu_flags(BF16_FLAGS["avx512_bf16"])
    assert Predictor(load_checkpoint(tiny_weights)).precision == "bf16"  # mapping's default: auto
    cpu_flags(AVX2_FLAGS)
    assert Predictor(load_checkpoint(tiny_weights)).precision == "fp32"


def test_evaluate_defaults_to_fp32_even_where_bf16_is_native(cpu_flags, tiny_weights: Path, tmp_path: Path,
                                                             make_tiny_dataset, capsys) -> None:
    data = make_tiny_dataset(tmp_path / "data", n_train=1, n_val=1, n_test=2)
    cpu_flags(BF16_FLAGS["avx512_bf16"])
    common = ["evaluate", "--data-root", str(data), "--weights", str(tiny_weights), "--device", "cpu",
              "--no-progress"]
    assert main([*common, "--out-dir", str(tmp_path / "default")]) == 0
    assert main([*common, "--out-dir", str(tmp_path / "auto"), "--precision", "auto"]) == 0
    printed = capsys.readouterr().out
    reports = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("default", "auto")}
    assert reports["default"]["precision"] == "fp32"
    assert reports["auto"]["precision"] == "bf16"  # the same machine, asked for auto
    assert printed.count("precision bf16: not exact") == 1
