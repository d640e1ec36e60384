"""CPU per upstream /classify call: httpx (the remote backend's client before) vs aiohttp.

Both clients call bench/standin_vllm.py (started here, answers at once) with the body the
remote backend sends (6 inputs of 302 token ids, orjson), 4 calls in flight as the backend
allows, pooled keep-alive connections; this process's CPU per call (the stand-in is another
process), medians of ``--rounds`` interleaved rounds.

usage: python bench/bench_upstream_client.py [--rounds 5] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchkit.processes import free_port  # noqa: E402

PAYLOAD = {
    "model": "standin",
    "input": [[101] + [2000 + i for i in range(300)] + [102]] * 6,
    "use_activation": False,
    "activation": False,
}


async def _httpx(url: str, calls: int) -> float:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:

        async def one() -> None:
            response = await client.post(
                "/classify",
                content=orjson.dumps(PAYLOAD),
                headers={"content-type": "application/json"},
            )
            orjson.loads(response.content)

        return await _timed(one, calls)


async def _aiohttp(url: str, calls: int) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one() -> None:
            async with session.post(
                url + "/classify",
                data=orjson.dumps(PAYLOAD),
                headers={"content-type": "application/json"},
            ) as response:
                orjson.loads(await response.read())

        return await _timed(one, calls)


async def _timed(one: object, calls: int) -> float:
    call = one  # type: ignore[assignment]
    await asyncio.gather(*(call() for _ in range(8)))  # type: ignore[operator]
    started = time.process_time()
    for _ in range(calls // 4):
        await asyncio.gather(*(call() for _ in range(4)))  # type: ignore[operator]
    return (time.process_time() - started) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    standin = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "standin_vllm.py"), "--port", str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        import uvloop

        results: dict[str, list[float]] = {"httpx": [], "aiohttp": []}
        for _ in range(args.rounds):
            results["httpx"].append(uvloop.run(_httpx(url, args.calls)))
            results["aiohttp"].append(uvloop.run(_aiohttp(url, args.calls)))
    finally:
        standin.terminate()
        standin.wait()
    print(f"| client | CPU per call (median of {args.rounds}) | rounds |")
    print("| --- | ---: | --- |")
    for name, values in results.items():
        rounds = ", ".join(f"{v * 1e3:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} ms | {rounds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
