"""Scale-out benchmark: ``--workers 2`` with the Redis store vs ``--workers 1`` with memory.

    python bench/scale_out.py --rounds 5 --seconds 10 --out bench/results/scale_out.md

rewardcal runs with ``--backend remote`` against a stand-in vLLM server that answers at
once (bench/standin_vllm.py), so the front end is measured alone: one-sample
``/v1/rewards`` requests from 64 concurrent clients (the OpenRLHF >= 0.9 pattern), all
observed into one calibration group. Per configuration and round: items/s, and the CPU
time of rewardcal's process tree per request (/proc, every worker included). Configs:

- memory-1:  ``--workers 1``, memory store (the default)
- redis-1:   ``--workers 1``, Redis store (the store's own cost per request)
- redis-2:   ``--workers 2``, Redis store (a second core for the front end)

Rounds alternate the configurations (so machine noise hits all of them alike); the report
gives medians. A real redis-server (Debian's package) on a free port, AOF on. The load
comes from wrk (Debian's package; one C thread) when installed, since on 2 cores an
in-process Python client takes a core from the workers; else from benchkit's closed loop
(httpx). Servers, ports and readiness are benchkit's, shared with the other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchkit.load import async_client, closed_loop  # noqa: E402
from benchkit.processes import ServerProcess, free_port  # noqa: E402
from benchkit.tiny_models import build_tiny_reward_model  # noqa: E402
from rewardcal.datasets import alpacaeval_outputs  # noqa: E402

CONFIGS = {"memory-1": ("memory", 1), "redis-1": ("redis", 1), "redis-2": ("redis", 2)}


async def load(base: str, requests: int, clients: int, bodies: list[dict[str, object]]) -> float:
    """Send ``requests`` one-sample requests from ``clients`` concurrent clients; wall s."""
    async with async_client(clients, timeout_s=60) as client:

        async def send(i: int) -> int:
            response = await client.post(f"{base}/v1/rewards", json=bodies[i % len(bodies)])
            response.raise_for_status()
            return 1

        run = await closed_loop(send, requests, clients, max_s=float("inf"))
    return run.wall_s


WRK_SCRIPT = """
-- One-sample /v1/rewards bodies, rotated (written by bench/scale_out.py).
local bodies = {}
local n = 0
function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end
local i = 0
function request()
  i = i % n + 1
  return wrk.format("POST", "/v1/rewards", {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def load_wrk(base: str, seconds: int, clients: int, bodies: Path, script: Path) -> float:
    """wrk (C, one thread) as the load: the client costs little of the 2 cores, so the
    workers get them. Returns requests/s; fails on any non-2xx answer."""
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(clients), "-d", f"{seconds}s", "-s", str(script), base,
         "--", str(bodies)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if "Non-2xx" in out.stdout:
        raise RuntimeError(f"wrk saw errors:\n{out.stdout}")
    for line in out.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10, help="load time per round (with wrk)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale_out.md")
    args = parser.parse_args()
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        raise SystemExit("redis-server is not installed (scripts/install_redis.sh)")
    bodies: list[dict[str, object]] = [
        {"items": [{"prompt": "Q", "response": o.output[:2000]}], "calibration_group": "bench"}
        for o in alpacaeval_outputs(600)
    ]
    tmp = Path(tempfile.mkdtemp(prefix="rewardcal-scale-bench-"))
    use_wrk = shutil.which("wrk") is not None
    bodies_file, script = tmp / "bodies.jsonl", tmp / "post.lua"
    bodies_file.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    script.write_text(WRK_SCRIPT)
    python = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # The remote backend needs a tokenizer only; the stand-in does the "scoring".
    build_tiny_reward_model("bert", tmp / "tok")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    standin_port, redis_port = free_port(), free_port()
    with (
        ServerProcess(
            [python, str(ROOT / "bench" / "standin_vllm.py"), "--port", str(standin_port)],
            tmp / "standin.log",
        ) as standin,
        ServerProcess(
            [
                redis_binary,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(tmp),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            tmp / "redis.log",
        ),
    ):
        standin.wait_ready(f"http://127.0.0.1:{standin_port}/health", 120)
        for round_ in range(args.rounds):
            for name, (store, workers) in CONFIGS.items():
                port = free_port()
                store_url = (
                    "memory"
                    if store == "memory"
                    else f"redis://127.0.0.1:{redis_port}/{round_ % 16}"
                )
                serve = [
                    python, "-m", "rewardcal.cli", "serve",
                    "--backend", "remote",
                    "--remote-url", f"http://127.0.0.1:{standin_port}",
                    "--model-path", str(tmp / "tok"),
                    "--port", str(port),
                    "--workers", str(workers),
                    "--calibration-store", store_url,
                    "--state-dir", str(tmp / f"state-{name}-{round_}"),
                    "--log-level", "warning",
                ]  # fmt: skip
                with ServerProcess(serve, tmp / f"{name}-{round_}.log", env=env) as server:
                    base = f"http://127.0.0.1:{port}"
                    server.wait_ready(f"{base}/ready", 120, in_a_row=10 * workers)
                    asyncio.run(load(base, 200, args.clients, bodies))  # warm-up
                    before = server.cpu_seconds()  # every worker: one process group
                    if use_wrk:
                        rate = load_wrk(base, args.seconds, args.clients, bodies_file, script)
                        count = rate * args.seconds
                    else:
                        count = args.requests
                        rate = count / asyncio.run(load(base, count, args.clients, bodies))
                    cpu = server.cpu_seconds() - before
                results[name].append((rate, 1000.0 * cpu / count))
                print(f"round {round_ + 1} {name}: {results[name][-1][0]:.0f} items/s, "
                      f"{results[name][-1][1]:.2f} ms CPU/request", flush=True)  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    write_report(args, results, "wrk (1 thread)" if use_wrk else "httpx (in-process)")


def write_report(
    args: argparse.Namespace, results: dict[str, list[tuple[float, float]]], client: str
) -> None:
    med = {n: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for n, rs in results.items()}  # fmt: skip
    lines = [
        "## Scale-out: workers and the Redis store (front end alone)",
        "",
        f"Command: `python bench/scale_out.py --rounds {args.rounds} --seconds "
        f"{args.seconds} --clients {args.clients}`; load from {client}; this machine: "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end. "
        "One-sample `/v1/rewards` requests from "
        f"{args.clients} clients, `--backend remote` against an instant stand-in "
        "(bench/standin_vllm.py), one observed calibration group; medians of the rounds.",
        "",
        "| config | items/s | CPU ms per request (all workers) | per round (items/s) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, (rate, cpu) in med.items():
        rounds = ", ".join(f"{r:.0f}" for r, _ in results[name])
        lines.append(f"| {name} | {rate:.0f} | {cpu:.2f} | {rounds} |")
    store_cost = med["redis-1"][1] / med["memory-1"][1] - 1
    lines += [
        "",
        f"- Redis store vs memory store, one worker: {store_cost:+.1%} CPU per request "
        "(target: < +10%).",
        f"- `--workers 2` with Redis vs `--workers 1` with memory: "
        f"{med['redis-2'][0] / med['memory-1'][0]:.2f}x items/s.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
