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
in-process Python client takes a core from the workers; else from httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"memory-1": ("memory", 1), "redis-1": ("redis", 1), "redis-2": ("redis", 2)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (live ones), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        stats[int(entry.name)] = (ppid, cpu)
        children.setdefault(ppid, []).append(int(entry.name))
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += stats.get(current, (0, 0.0))[1]
        stack.extend(children.get(current, []))
    return total


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, timeout_s: float = 120, in_a_row: int = 1) -> None:
    """``in_a_row`` answers 200 on fresh connections: with several workers on one port,
    each connection lands on any of them, and each loads its model on its own."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        try:
            ok = httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        if streak >= in_a_row:
            return
        if not ok:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


async def load(base: str, requests: int, clients: int, texts: list[str]) -> float:
    """Send ``requests`` one-sample requests from ``clients`` concurrent clients; wall s."""
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                body = {
                    "items": [{"prompt": "Q", "response": texts[i % len(texts)]}],
                    "calibration_group": "bench",
                }
                response = await client.post("/v1/rewards", json=body)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - started


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


def alpaca_texts(limit: int) -> list[str]:
    import gzip
    import json

    path = ROOT / "service" / "data" / "alpacaeval-outputs-3models.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [
            json.loads(line)["output"][:2000] for _, line in zip(range(limit), handle, strict=False)
        ]


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
    texts = alpaca_texts(600)
    tmp = Path(tempfile.mkdtemp(prefix="rewardcal-scale-bench-"))
    use_wrk = shutil.which("wrk") is not None
    bodies, script = tmp / "bodies.jsonl", tmp / "post.lua"
    import json as _json

    bodies.write_text(
        "".join(
            _json.dumps({"items": [{"prompt": "Q", "response": t}], "calibration_group": "bench"})
            + "\n"
            for t in texts
        )
    )
    script.write_text(WRK_SCRIPT)
    python = sys.executable
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [python, "-m", "rewardcal.cli", "build-tiny-model", "bert", str(tmp / "tok")],
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    standin_port, redis_port = free_port(), free_port()
    with (
        process(
            [python, str(ROOT / "bench" / "standin_vllm.py"), "--port", str(standin_port)],
            tmp / "standin.log",
        ),
        process(
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
        wait_ready(f"http://127.0.0.1:{standin_port}/health")
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
                with process(serve, tmp / f"{name}-{round_}.log", env) as pid:
                    base = f"http://127.0.0.1:{port}"
                    wait_ready(f"{base}/ready", in_a_row=10 * workers)
                    asyncio.run(load(base, 200, args.clients, texts))  # warm-up
                    before = tree_cpu_seconds(pid)
                    if use_wrk:
                        rate = load_wrk(base, args.seconds, args.clients, bodies, script)
                        count = rate * args.seconds
                    else:
                        count = args.requests
                        rate = count / asyncio.run(load(base, count, args.clients, texts))
                    cpu = tree_cpu_seconds(pid) - before
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
