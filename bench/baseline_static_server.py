"""Baseline (a) of the serving benchmark: a per-request static-batching reward server.

A faithful minimal copy of the pattern of OpenRLHF's ``openrlhf/cli/serve_rm.py``
(``RewardModelProxy``), which many RLHF setups put behind ``--remote_rm_url``:

* FastAPI, one route ``POST /get_reward`` taking ``{"query": [str, ...]}`` and returning
  ``{"rewards": [float, ...]}`` (other fields such as ``prompts``/``labels`` are ignored);
* the request's queries, in request order (no length sorting), are cut into fixed-size
  batches of ``--batch-size`` (None = the whole request, as in serve_rm), each tokenized with
  ``tokenizer(texts, padding=True, truncation=True, max_length=max_len)`` and run through
  the model under ``torch.no_grad()``;
* the handler is an ``async def`` that calls the blocking forward passes directly, as
  serve_rm does: the event loop is blocked while a request is scored, so requests are
  scored one at a time (a global lock in effect; an explicit lock is held too). No
  batching across requests.

Deviations from serve_rm, each one so that both servers do the same work on this model:

* ``AutoModelForSequenceClassification`` (first logit) instead of OpenRLHF's
  ``get_llm_for_sequence_regression`` wrapper (a decoder value head; it does not load a
  BERT classifier);
* padding on the right: serve_rm pads on the left, which suits decoders but shifts the
  absolute positions of an encoder such as BERT (different scores, same cost);
* truncation side is a flag (serve_rm keeps the tokenizer's default, the right side);
  the benchmark passes ``left`` to match rewardcal's default, so both score the same tokens;
* serve_rm strips pad/EOS tokens and appends the EOS token to every query; BERT
  tokenizers have no EOS token (the string concatenation would fail), and the text is
  left as sent, as rewardcal scores it;
* serve_rm logs every response at INFO level; here nothing is logged per request (rewardcal
  runs without access logs as well).

usage: python bench/baseline_static_server.py --model-path DIR [--port 5000]
       [--batch-size 16] [--max-len 512] [--threads 2] [--truncation-side left]
"""

from __future__ import annotations

import argparse
import os
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="fixed batch size (default: whole request)"
    )
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--truncation-side", choices=("left", "right"), default="right")
    parser.add_argument("--dtype", default="float32")
    return parser.parse_args(argv)


class RewardModelProxy:
    """Tokenize a request's queries, split them into fixed-size batches, score them."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if args.threads:
            torch.set_num_threads(args.threads)
        self._torch = torch
        self.model = AutoModelForSequenceClassification.from_pretrained(
            args.model_path, dtype=getattr(torch, args.dtype)
        ).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(args.model_path)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = args.truncation_side
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = args.max_len
        self.batch_size = args.batch_size
        self.lock = threading.Lock()

    def get_reward(self, queries: list[str]) -> list[float]:
        batch_size = self.batch_size or len(queries)
        scores: list[float] = []
        with self.lock, self._torch.no_grad():
            for i in range(0, len(queries), batch_size):
                inputs = self.tokenize_fn(queries[i : i + batch_size])
                logits = self.model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
                scores.extend(logits.logits[:, 0].float().tolist())
        return scores

    def tokenize_fn(self, texts: list[str]) -> Any:
        return self.tokenizer(
            texts,
            return_tensors="pt",
            max_length=self.max_length,
            padding=True,
            truncation=True,
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import uvicorn

    reward_model = RewardModelProxy(args)
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> JSONResponse:
        data = await request.json()
        queries = data.get("query")
        rewards = reward_model.get_reward(queries)  # blocking, on the event loop (serve_rm)
        return JSONResponse({"rewards": rewards})

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
