"""A stand-in for a vLLM server that answers at once: rewardcal's front end measured alone.

    python bench/standin_vllm.py --port 8200 [--model NAME]

Speaks what the ``remote`` backend uses: ``GET /health``, ``GET /v1/models`` and
``POST /classify`` with token-id inputs; each input's score is 0.001 x its length (a
length-paying "model", so calibration has a bias to remove). Plain asyncio streams, no
framework: it costs a few microseconds per request, so the CPU measured in rewardcal's
process is rewardcal's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json


def _answer(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _classify(payload: dict[str, object]) -> bytes:
    inputs = payload.get("input") or []
    assert isinstance(inputs, list)
    data = [
        {"index": i, "label": "LABEL_0", "probs": [0.001 * len(ids)], "num_classes": 1}
        for i, ids in enumerate(inputs)
    ]
    return json.dumps({"object": "list", "data": data}).encode()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, model: str) -> None:
    models = json.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "max_model_len": 512}]}
    ).encode()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and path == "/classify":
                writer.write(_answer(200, _classify(json.loads(body))))
            elif path == "/v1/models":
                writer.write(_answer(200, models))
            elif path == "/health":
                writer.write(_answer(200, b"{}"))
            else:
                writer.write(_answer(404, b'{"error": "not found"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, model: str) -> None:
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, model), host="127.0.0.1", port=port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="standin")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.model))


if __name__ == "__main__":
    main()
