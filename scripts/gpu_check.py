"""One prepared device check of the vllm backend: parity on the device, then throughput.

    scripts/gpu_check.sh                 # a GPU host with vLLM installed; needs no network
    scripts/gpu_check.sh --cpu           # the same code on CPU with small shapes (here, CI)

Steps (each bounded by a timeout; a failed or timed-out step is reported and the next runs):

1. parity: tiny Llama and Qwen2 reward models built offline (``service.tiny_models``,
   head_dim 32) scored in float32 by the vllm backend and by the transformers backend on the
   same device; prints the max abs difference.
2. throughput on a reward model of production shape: a ``LlamaForSequenceClassification``
   config with Llama-3.1-8B's dimensions and random weights (vLLM ``load_format="dummy"``:
   no checkpoint, same compute) with the tiny BPE tokenizer, on realistic text (the
   AlpacaEval outputs shipped in ``service/data``):
   a. through the service (``/v1/rewards``, vllm backend, a child process on 127.0.0.1);
   b. through vLLM's own server (``/classify`` with the same token ids).
   Each is measured batched (many requests in flight) and one at a time; prints items/s,
   request latency p50/p99 and the batching gain.

``--cpu`` swaps the production shape for a small one (hidden 256, 4 layers) in float32 and
runs everything with fewer items: it checks that every code path works, not the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ALPACAEVAL = REPO / "service" / "data" / "alpacaeval-outputs-3models.jsonl.gz"
PROMPT = "You are judged on helpfulness. Answer the question."

# Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json), with a one-label score head.
LLAMA_8B_SHAPE = dict(
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
SMALL_SHAPE = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=1000,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
)


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    shape: dict[str, int | float]
    shape_name: str
    dtype: str  # production-shape compute dtype
    max_input_tokens: int
    batched_items: int
    sequential_items: int
    items_per_request: int
    concurrency: int
    parity_tolerance: float
    start_timeout_s: float
    load_time_limit_s: float
    budget_s: float
    kv_cache_memory_bytes: int | None
    gpu_memory_utilization: float
    parity_gpu_memory_utilization: float


GPU = Profile(
    name="gpu",
    device="cuda",
    shape=LLAMA_8B_SHAPE,
    shape_name="Llama-3.1-8B shape",
    dtype="bfloat16",
    max_input_tokens=2048,
    batched_items=8192,
    sequential_items=128,
    items_per_request=16,
    concurrency=32,
    # GPU matmuls may run in TF32 inside vLLM; float32 differences stay well below this.
    parity_tolerance=1e-3,
    start_timeout_s=240,
    load_time_limit_s=45,
    budget_s=450,
    kv_cache_memory_bytes=None,
    gpu_memory_utilization=0.85,
    parity_gpu_memory_utilization=0.2,
)
CPU = Profile(
    name="cpu",
    device="cpu",
    shape=SMALL_SHAPE,
    shape_name="small Llama shape (CPU dry run)",
    dtype="float32",
    max_input_tokens=512,
    batched_items=96,
    sequential_items=8,
    items_per_request=8,
    concurrency=4,
    parity_tolerance=1e-4,
    start_timeout_s=600,
    load_time_limit_s=60,
    budget_s=2400,
    kv_cache_memory_bytes=256 * 2**20,
    gpu_memory_utilization=0.9,
    parity_gpu_memory_utilization=0.9,
)


@dataclass
class LoadFigures:
    items: int
    requests: int
    seconds: float
    items_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass
class Report:
    profile: str
    environment: dict[str, str] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


class StepTimeout(Exception):
    pass


class Budget:
    """The whole check's time limit; each step gets what is left, at most its own limit."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 5:
            raise StepTimeout("the check's time budget is spent")
        return min(cap, remaining)


# ---- models -----------------------------------------------------------------------------


def build_dummy_reward_model(out_dir: Path, shape: dict[str, int | float], dtype: str) -> Path:
    """config.json of a Llama reward model of the given shape, plus the tiny BPE tokenizer.

    No weights: vLLM loads it with ``load_format="dummy"``. Token ids of the tiny tokenizer
    (< 1000) are valid ids of any larger vocabulary, and the embedding lookup costs the same.
    """
    from transformers import LlamaConfig

    from service.tiny_models import build_tiny_reward_model

    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_reward_model("llama", Path(tmp) / "tiny")
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in tiny.iterdir():
            if item.name not in ("config.json", "model.safetensors"):
                shutil.copy(item, out_dir / item.name)
        tiny_config = json.loads((tiny / "config.json").read_text())
    vocab = max(int(shape["vocab_size"]), int(tiny_config["vocab_size"]))
    config = LlamaConfig(
        **{**shape, "vocab_size": vocab},
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


def realistic_items(count: int) -> list[dict[str, str]]:
    """``count`` distinct (prompt, response) items from the AlpacaEval outputs (or stdlib
    docstrings when the data file is absent).

    Distinct on purpose: vLLM caches prefixes (on by default for last-token pooling), and a
    repeated item would be scored from the cache. Beyond the rows of the file, prompts are
    paired with other rows' responses; shared prompts are what RLHF sends anyway.
    """
    rows: list[tuple[str, str]] = []
    if ALPACAEVAL.is_file():
        with gzip.open(ALPACAEVAL, "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                rows.append((str(row["instruction"]), str(row["output"])))
    else:
        from service.tiny_models import training_corpus

        lines = training_corpus()
        rows = [(lines[i], " ".join(lines[i + 1 : i + 12])) for i in range(0, len(lines) - 12, 12)]
    n = len(rows)
    if count > n * n:
        raise ValueError(f"{count} items asked, {n * n} distinct pairs available")
    # k -> (prompt k % n, response (k + k // n) % n): distinct pairs for k < n * n.
    return [{"prompt": rows[k % n][0], "response": rows[(k + k // n) % n][1]} for k in range(count)]


def tokenize(model_dir: Path, items: list[dict[str, str]], max_tokens: int) -> list[list[int]]:
    """The token ids the service produces for these items (what vLLM's server gets)."""
    from transformers import AutoTokenizer

    from service import formatting

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        formatting.render_messages(
            tokenizer, formatting.pair_messages(item["prompt"], item["response"])
        )
        for item in items
    ]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens)
    return ids


# ---- step 1: parity ------------------------------------------------------------------------

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
    from service import formatting
    from service.backends.transformers_backend import TransformersBackend
    from service.backends.vllm_backend import VllmBackend
    from service.tiny_models import build_tiny_reward_model

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
        tokenizer = backend.tokenizer
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


# ---- step 2: throughput ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_process(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child server in its own process group, killed as a group on the way out."""
    env = dict(os.environ)
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def wait_healthy(
    base: str, path: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> float:
    import httpx

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"server exited with {proc.returncode}; log tail:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(base + path)).status_code == 200:
                    return time.monotonic() - started
            await asyncio.sleep(0.5)
    raise StepTimeout(f"{base}{path} not ready after {timeout_s:.0f} s (log: {log})")


Send = Callable[[Any, list[int]], Awaitable[None]]


async def run_load(
    send: Send,
    client: Any,
    indices: list[int],
    per_request: int,
    concurrency: int,
    time_limit_s: float,
) -> LoadFigures:
    """Send ``indices`` in requests of ``per_request`` items, ``concurrency`` in flight;
    stops issuing new requests after ``time_limit_s``."""
    chunks = [indices[i : i + per_request] for i in range(0, len(indices), per_request)]
    latencies: list[float] = []
    done_items = 0
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(chunk: list[int]) -> None:
        nonlocal done_items
        async with gate:
            if time.monotonic() - started > time_limit_s:
                return
            t0 = time.monotonic()
            await send(client, chunk)
            latencies.append(time.monotonic() - t0)
            done_items += len(chunk)

    await asyncio.gather(*(one(c) for c in chunks))
    elapsed = time.monotonic() - started
    if not latencies:
        raise RuntimeError("no request completed")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return LoadFigures(
        items=done_items,
        requests=len(latencies),
        seconds=round(elapsed, 3),
        items_per_s=round(done_items / elapsed, 2),
        p50_ms=round(statistics.median(ordered) * 1000, 2),
        p99_ms=round(p99 * 1000, 2),
    )


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


async def measure(send: Send, client: Any, profile: Profile, budget: Budget) -> dict[str, Any]:
    """Warm up, then batched and one-at-a-time figures, and the batching gain."""
    warm, batched_items, single_items = phases(profile)
    await run_load(send, client, warm, profile.items_per_request, 2, 60)
    batched = await run_load(
        send,
        client,
        batched_items,
        profile.items_per_request,
        profile.concurrency,
        budget.left(profile.load_time_limit_s),
    )
    single = await run_load(
        send, client, single_items, 1, 1, budget.left(profile.load_time_limit_s / 2)
    )
    return {
        "batched": asdict(batched),
        "one_at_a_time": asdict(single),
        "batching_gain": round(batched.items_per_s / single.items_per_s, 2),
        "setup": f"{profile.items_per_request} items/request, {profile.concurrency} in flight",
    }


async def throughput_service(
    model_dir: Path, profile: Profile, items: list[dict[str, str]], budget: Budget, eager: bool
) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = model_dir.parent / "service.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-dummy",
        str(model_dir),
        "--port",
        str(port),
        "--profile",
        profile.name,
    ] + (["--eager"] if eager else [])
    with server_process(command, log) as proc:
        timeout_s = budget.left(profile.start_timeout_s)
        start_s = await wait_healthy(base, "/ready", proc, log, timeout_s)

        async def send(client: httpx.AsyncClient, chunk: list[int]) -> None:
            body = {"items": [items[i] for i in chunk]}
            response = await client.post(f"{base}/v1/rewards", json=body)
            response.raise_for_status()

        limits = httpx.Limits(max_connections=profile.concurrency * 2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            figures = await measure(send, client, profile, budget)
    figures["start_s"] = round(start_s, 1)
    return figures


async def throughput_vllm_server(
    model_dir: Path, profile: Profile, ids: list[list[int]], budget: Budget, eager: bool
) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = model_dir.parent / "vllm-server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        "dummy-rm",
        "--runner",
        "pooling",
        "--load-format",
        "dummy",
        "--dtype",
        profile.dtype,
        "--max-model-len",
        str(profile.max_input_tokens),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-log-stats",
    ]
    if eager:
        command.append("--enforce-eager")
    if profile.kv_cache_memory_bytes is not None:
        command += ["--kv-cache-memory-bytes", str(profile.kv_cache_memory_bytes)]
    else:
        command += ["--gpu-memory-utilization", str(profile.gpu_memory_utilization)]
    with server_process(command, log) as proc:
        timeout_s = budget.left(profile.start_timeout_s)
        start_s = await wait_healthy(base, "/health", proc, log, timeout_s)

        async def send(client: httpx.AsyncClient, chunk: list[int]) -> None:
            body = {
                "model": "dummy-rm",
                "input": [ids[i] for i in chunk],
                "use_activation": False,
            }
            response = await client.post(f"{base}/classify", json=body)
            response.raise_for_status()

        limits = httpx.Limits(max_connections=profile.concurrency * 2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            figures = await measure(send, client, profile, budget)
    figures["start_s"] = round(start_s, 1)
    return figures


# ---- the service on dummy weights (child process entry) ------------------------------------


def serve_dummy(model_dir: Path, port: int, profile: Profile, eager: bool) -> int:
    """Run the service (vllm backend, random weights) on 127.0.0.1:port until killed."""
    import logging

    import uvicorn

    from service.api import create_app
    from service.backends.vllm_backend import VllmBackend
    from service.config import Settings

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="vllm",
        dtype=profile.dtype,
        device=profile.device,
        max_input_tokens=profile.max_input_tokens,
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


# ---- the check -----------------------------------------------------------------------------


def environment(profile: Profile) -> dict[str, str]:
    import torch
    import transformers
    import vllm

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vllm": getattr(vllm, "__version__", "?"),
        "device": profile.device,
    }
    if profile.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible (use --cpu for the CPU dry run)")
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


async def check(args: argparse.Namespace) -> Report:
    profile = CPU if args.cpu else GPU
    budget = Budget(args.budget_s or profile.budget_s)
    report = Report(profile=profile.name, environment=environment(profile))
    print(f"gpu_check: {json.dumps(report.environment)}", flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rewardcal-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)

    async def step(name: str, run: Callable[[], Awaitable[Any]], cap_s: float) -> Any:
        started = time.monotonic()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            result = await asyncio.wait_for(run(), budget.left(cap_s))
        except (TimeoutError, StepTimeout) as exc:
            report.failures.append(f"{name}: timed out ({exc or 'step limit'})")
        except Exception as exc:  # noqa: BLE001 - report and go on with the next step
            message = " ".join(str(exc).split())[:2000]
            report.failures.append(f"{name}: {type(exc).__name__}: {message}")
        else:
            print(f"gpu_check: {name} done in {time.monotonic() - started:.1f} s", flush=True)
            return result
        print(f"gpu_check: {report.failures[-1]}", flush=True)
        return None

    for arch in args.archs:
        diff = await step(
            f"parity tiny-{arch}",
            lambda arch=arch: parity(arch, workdir, profile, profile.start_timeout_s),
            profile.start_timeout_s + 60,
        )
        if diff is not None:
            report.parity[f"tiny-{arch}"] = diff
            if diff > profile.parity_tolerance:
                report.failures.append(
                    f"parity tiny-{arch}: max abs diff {diff:.3g} > {profile.parity_tolerance}"
                )

    if not args.skip_throughput:
        model_dir = build_dummy_reward_model(workdir / "dummy-rm", profile.shape, profile.dtype)
        items = realistic_items(items_needed(profile))
        ids = tokenize(model_dir, items, profile.max_input_tokens)
        mean_tokens = statistics.mean(len(x) for x in ids)
        print(f"gpu_check: {len(items)} items, mean {mean_tokens:.0f} tokens", flush=True)
        cap = profile.start_timeout_s + 3 * profile.load_time_limit_s
        service = await step(
            "throughput via the service",
            lambda: throughput_service(model_dir, profile, items, budget, args.eager),
            cap,
        )
        server = await step(
            "throughput via vLLM's server",
            lambda: throughput_vllm_server(model_dir, profile, ids, budget, args.eager),
            cap,
        )
        common = {
            "model": profile.shape_name + " (random weights)",
            "dtype": profile.dtype,
            "eager": args.eager,
            "mean_input_tokens": round(mean_tokens, 1),
        }
        if service is not None:
            report.throughput["service /v1/rewards"] = {**common, **service}
        if server is not None:
            report.throughput["vLLM server /classify"] = {**common, **server}
    return report


def print_report(report: Report) -> None:
    print("\n=== rewardcal device check:", report.profile, json.dumps(report.environment))
    for name, diff in report.parity.items():
        print(f"parity {name} (float32, vllm vs transformers): max abs diff {diff:.2e}")
    for name, figures in report.throughput.items():
        b, s = figures["batched"], figures["one_at_a_time"]
        print(
            f"{name} [{figures['model']}, {figures['dtype']}, eager={figures['eager']}, "
            f"mean {figures['mean_input_tokens']} tokens, start {figures['start_s']} s]\n"
            f"  batched ({figures['setup']}): {b['items_per_s']} items/s, "
            f"p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms per request ({b['items']} items)\n"
            f"  one at a time: {s['items_per_s']} items/s, p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms\n"
            f"  batching gain: {figures['batching_gain']}x"
        )
    names = list(report.throughput)
    if len(names) == 2:
        ratio = (
            report.throughput[names[0]]["batched"]["items_per_s"]
            / report.throughput[names[1]]["batched"]["items_per_s"]
        )
        print(f"service / vLLM server throughput (batched): {ratio:.2f}")
    for failure in report.failures:
        print("FAILED:", failure)
    print("result:", "ok" if not report.failures else f"{len(report.failures)} failure(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU dry run with small shapes")
    parser.add_argument("--archs", nargs="+", default=["llama", "qwen2"])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enforce eager mode (no CUDA graphs / compile): starts in seconds, which the "
        "8-minute budget needs; --no-eager measures the compiled engine",
    )
    parser.add_argument("--budget-s", type=float, default=None, help="time budget of the check")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--serve-dummy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="gpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.serve_dummy:
        profile = CPU if args.profile == "cpu" else GPU
        return serve_dummy(Path(args.serve_dummy), args.port, profile, args.eager)

    # A SIGTERM (the wrapper's timeout) unwinds like Ctrl-C, so child servers are killed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    report = asyncio.run(check(args))
    print_report(report)
    if args.out:
        Path(args.out).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if not report.failures else 1


if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    sys.exit(main())
