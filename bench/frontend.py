"""Front-end CPU per request: rewardcal's request path vs vLLM's own API server.

What a trainer pays per request in the server process, model excluded:

* rewardcal ``--backend remote`` pointed at ``bench/standin_vllm.py`` (a stand-in vLLM that
  answers at once), so every CPU second counted in rewardcal's process is its own request
  path: HTTP, validation, admission, tokenization, the upstream call, calibration, response;
* vLLM's own OpenAI server (``--vllm``, optional: it takes minutes to start) on the same
  one-sample ``/classify`` requests, counting its API-server process only (its tokenizer
  included; the EngineCore child process, where the model runs, excluded).

Both serve the default model's light twin (``benchkit.tiny_models.build_light_twin``: the
same tokenizer, chat template and context, one tiny layer; ``--full-model`` serves the model
itself), and vLLM takes every waiting request into a step, so that neither front end waits
on an engine: at the default model's ~8 requests/s vLLM's API-server process spends 2-10 ms
of CPU per request on its own polling while 64 requests wait, which is not front-end work.

Patterns (AlpacaEval texts of service/data rendered with the default model's chat template):
one-sample ``/classify``, ``/v1/rewards`` and ``/get_reward`` from 64 concurrent clients,
1,024 requests each; and 256-item requests of each route from 4 clients. Each round runs
every (server, pattern) once, in alternating order; reported are medians over the rounds of
the server process's user+system CPU (``/proc/<pid>/stat``) divided by requests (or items).
The load generator runs in its own process (plain asyncio streams, keep-alive connections
opened before the clock starts), so its CPU is never counted.

usage: python bench/frontend.py [--rounds 3] [--vllm] [--calibration lowess|none]
           [--requests 1024] [--clients 64] [--full-model] [--out bench/results/frontend.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

SERVED_NAME = "default-rm-v1"
MAX_TOKENS = 512
KV_CACHE_BYTES = 256 * 2**20
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Pattern:
    key: str
    route: str
    items: int  # samples per request
    clients: int
    requests: int


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads; not its children)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        stat = handle.read()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def api_server_pid(group_leader: int) -> int:
    """The process serving HTTP: the group leader itself (vLLM's API server starts the
    EngineCore as a child process, which is not counted)."""
    return group_leader


# ---- request bodies ------------------------------------------------------------------------


def body_for(route: str, samples: list[dict[str, str]]) -> bytes:
    if route == "/classify":
        texts = [s["query"] for s in samples]
        # vLLM refuses (400) inputs beyond max_model_len unless asked to truncate.
        payload: dict[str, Any] = {
            "model": SERVED_NAME,
            "input": texts[0] if len(texts) == 1 else texts,
            "truncate_prompt_tokens": MAX_TOKENS,
        }
    elif route == "/v1/rewards":
        payload = {"items": [{"prompt": s["prompt"], "response": s["response"]} for s in samples]}
    elif route == "/get_reward":
        payload = {
            "query": [s["query"] for s in samples],
            "prompts": [s["templated_prompt"] for s in samples],
        }
    else:
        raise ValueError(route)
    return json.dumps(payload).encode()


def load_samples(model_path: Path) -> list[dict[str, str]]:
    import random

    from transformers import AutoTokenizer

    from rewardcal import formatting
    from tests.traffic import alpaca_items

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    out = []
    for item in alpaca_items():
        query = formatting.render_messages(
            tokenizer, formatting.pair_messages(item["prompt"], item["response"])
        )
        cut = query.rfind(item["response"]) if item["response"] else -1
        out.append(
            {
                "prompt": item["prompt"],
                "response": item["response"],
                "query": query,
                "templated_prompt": query[:cut] if cut > 0 else "",
            }
        )
    random.Random(0).shuffle(out)
    return out


# ---- the load generator (its own process) --------------------------------------------------


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
) -> int:
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _drive(job: dict[str, Any]) -> dict[str, Any]:
    bodies = [b.encode("latin-1") for b in job["bodies"]]
    conns = [await _connect(job["port"]) for _ in range(job["clients"])]
    todo = iter(range(job["requests"]))
    statuses: dict[int, int] = {}

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in todo:
            status = await _post(reader, writer, job["path"], bodies[i % len(bodies)])
            statuses[status] = statuses.get(status, 0) + 1

    cpu0, wall0 = process_cpu_seconds(job["pid"]), time.perf_counter()
    await asyncio.gather(*(client(r, w) for r, w in conns))
    wall, cpu1 = time.perf_counter() - wall0, process_cpu_seconds(job["pid"])
    for _, writer in conns:
        writer.close()
    return {"cpu_s": cpu1 - cpu0, "wall_s": wall, "statuses": statuses}


def load_worker() -> None:
    job = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_drive(job))))


def run_load(pid: int, port: int, pattern: Pattern, bodies: list[bytes]) -> dict[str, Any]:
    import subprocess

    job = {
        "pid": pid,
        "port": port,
        "path": pattern.route,
        "clients": pattern.clients,
        "requests": pattern.requests,
        "bodies": [b.decode("latin-1") for b in bodies],
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--load-worker"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1024, help="one-sample requests per run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch-requests", type=int, default=8, help="256-item requests per run")
    parser.add_argument("--calibration", default="lowess", help="calibration_method of rewardcal")
    parser.add_argument("--vllm", action="store_true", help="also measure vLLM's own server")
    parser.add_argument("--model-path", type=Path)
    parser.add_argument(
        "--full-model",
        action="store_true",
        help="serve the model itself, not its light twin (vLLM's engine becomes the bottleneck)",
    )
    parser.add_argument("--only", help="comma-separated pattern keys (development)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "frontend.json")
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        load_worker()
        return 0

    import serving  # bench/serving.py: server processes, the default model

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    full_model = serving.resolve_model(args.model_path, log)
    samples = load_samples(full_model)
    state = Path(tempfile.mkdtemp(prefix="rewardcal-frontend-"))
    model = full_model
    if not args.full_model:
        # Both servers load the light twin: the same tokenizer, chat template and context,
        # so their front ends do the same work, with an engine that keeps up. With the
        # 6-layer default model vLLM's engine scores ~8 requests/s on 2 cores and its
        # API-server process spends CPU waiting with 64 requests in flight (2-10 ms per
        # request measured, varying with how long they wait): not a front-end cost.
        from benchkit.tiny_models import build_light_twin

        model = build_light_twin(full_model, state / "light-twin")
    one = [
        Pattern("classify-1", "/classify", 1, args.clients, args.requests),
        Pattern("rewards-1", "/v1/rewards", 1, args.clients, args.requests),
        Pattern("get_reward-1", "/get_reward", 1, args.clients, args.requests),
        Pattern("classify-256", "/classify", 256, 4, args.batch_requests),
        Pattern("rewards-256", "/v1/rewards", 256, 4, args.batch_requests),
        Pattern("get_reward-256", "/get_reward", 256, 4, args.batch_requests),
    ]
    if args.only:
        keep = set(args.only.split(","))
        one = [p for p in one if p.key in keep]

    def bodies(pattern: Pattern) -> list[bytes]:
        k = pattern.items
        groups = [samples[i : i + k] for i in range(0, len(samples) - k + 1, k)]
        if k > 1:  # every request its own window of texts, wrapping around
            groups = [(samples * 2)[i * 97 : i * 97 + k] for i in range(16)]
        return [body_for(pattern.route, g) for g in groups]

    env = serving.base_env(2)
    standin_port = serving.free_port()
    specs = {
        "standin": serving.ServerSpec(
            "standin",
            "stand-in vLLM",
            [sys.executable, str(ROOT / "bench" / "standin_vllm.py"), "--model", SERVED_NAME],
            env,
            "/health",
            "classify",
            False,
            60.0,
        ),
        "rewardcal": serving.ServerSpec(
            "rewardcal",
            f"rewardcal --backend remote (calibration {args.calibration})",
            [sys.executable, "-m", "rewardcal.cli", "serve", "--model-path", str(model)]
            + ["--served-model-name", SERVED_NAME, "--max-input-tokens", str(MAX_TOKENS)]
            + ["--host", "127.0.0.1", "--backend", "remote"]
            + ["--remote-url", f"http://127.0.0.1:{standin_port}"]
            + ["--calibration-method", args.calibration],
            dict(
                env,
                REWARDCAL_STATE_DIR=str(state / "rc"),
                REWARDCAL_LOG_LEVEL="warning",
                PYTHONPATH=os.pathsep.join(
                    p for p in (str(ROOT / ".pyshim"), str(ROOT), env.get("PYTHONPATH")) if p
                ),
            ),
            "/ready",
            "classify",
            True,
            300.0,
        ),
    }
    if args.vllm:
        specs["vllm"] = serving.ServerSpec(
            "vllm",
            "vLLM OpenAI server (API-server process)",
            # Started from the state folder, not the repository (vLLM's own server, without
            # the checkout on sys.path).
            ["sh", "-c", 'cd "$0" && exec "$@"', str(state)]
            + [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
            + ["--runner", "pooling", "--served-model-name", SERVED_NAME]
            + ["--host", "127.0.0.1", "--enforce-eager", "--dtype", "float32"]
            + ["--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--max-model-len", str(MAX_TOKENS)]
            # Steps that take every waiting request (64 x ~350 tokens): the engine keeps up,
            # 170-450 requests/s here (rewardcal: 1,000-1,500 against the stand-in).
            + ["--max-num-seqs", "128", "--max-num-batched-tokens", "32768"]
            + ["--disable-log-stats", "--disable-uvicorn-access-log"],
            {
                k: v
                for k, v in dict(
                    env, VLLM_HOST_IP="127.0.0.1", VLLM_CACHE_ROOT=str(state / "vllm-cache")
                ).items()
                if k != "PYTHONPATH"
            },
            "/health",
            "classify",
            False,
            600.0,
        )

    class Running(serving.Server):
        """bench/serving.py's server (a benchkit process group) with the calls used here."""

        pgid = property(lambda self: self.process.pid)  # own session: pid == group id

        def start(self) -> None:
            self.process.start()

        def wait_ready(self) -> None:
            self.started_in_s = self.process.wait_ready(
                self.base + self.spec.ready_path, self.spec.start_timeout_s
            )

        def log_tail(self) -> str:
            return self.process.log_tail()

        def stop(self) -> None:
            self.process.stop()

    procs = {}
    standin = Running(specs["standin"], standin_port, state)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        standin.start()
        standin.wait_ready()
        for key in [k for k in specs if k != "standin"]:
            procs[key] = Running(specs[key], serving.free_port(), state)
            procs[key].start()
        for proc in procs.values():
            proc.wait_ready()
            log(f"{proc.spec.label} ready in {proc.started_in_s:.0f} s")
        runs = [("rewardcal", p) for p in one]
        if "vllm" in procs:
            runs += [("vllm", p) for p in one if p.key == "classify-1"]
        prepared = {p.key: bodies(p) for p in one}
        for server, pattern in runs:  # warm-up: connection pools, first-use caches
            warm = Pattern(
                pattern.key,
                pattern.route,
                pattern.items,
                pattern.clients,
                max(pattern.clients, pattern.requests // 8),
            )
            run_load(procs[server].pgid, procs[server].port, warm, prepared[pattern.key])
        for round_no in range(args.rounds):
            order = runs if round_no % 2 == 0 else runs[::-1]
            for server, pattern in order:
                proc = procs[server]
                out = run_load(api_server_pid(proc.pgid), proc.port, pattern, prepared[pattern.key])
                bad = {s: n for s, n in out["statuses"].items() if s != "200"}
                if bad:
                    raise RuntimeError(
                        f"{server} {pattern.key}: non-200 answers {bad}: {proc.log_tail()}"
                    )
                items = pattern.requests * pattern.items
                row = dict(
                    out,
                    server=server,
                    pattern=pattern.key,
                    items=items,
                    ms_per_request=1e3 * out["cpu_s"] / pattern.requests,
                    ms_per_item=1e3 * out["cpu_s"] / items,
                )
                results.setdefault(f"{server} {pattern.key}", []).append(row)
                log(
                    f"round {round_no + 1} {server:9s} {pattern.key:15s} "
                    f"{row['ms_per_request']:.3f} ms CPU/request, {row['ms_per_item']:.3f} "
                    f"ms/item, {pattern.requests / out['wall_s']:.0f} req/s"
                )
    finally:
        for proc in procs.values():
            proc.stop()
        standin.stop()
    summary = {
        key: {
            "ms_per_request": statistics.median(r["ms_per_request"] for r in rows),
            "ms_per_item": statistics.median(r["ms_per_item"] for r in rows),
            "min_max_ms_per_request": [
                min(r["ms_per_request"] for r in rows),
                max(r["ms_per_request"] for r in rows),
            ],
            "rounds": len(rows),
        }
        for key, rows in results.items()
    }
    print(f"\n| server / pattern | CPU ms per request (median of {args.rounds}) | per item |")
    print("| --- | --- | --- |")
    for key, s in summary.items():
        lo, hi = s["min_max_ms_per_request"]
        print(f"| {key} | {s['ms_per_request']:.3f} ({lo:.3f}-{hi:.3f}) | {s['ms_per_item']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"argv": sys.argv, "summary": summary, "runs": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
