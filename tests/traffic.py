"""Realistic traffic for the tests: the AlpacaEval responses shipped with the package (three
real LLMs of very different verbosity), read by the product's one loader."""

from __future__ import annotations

from rewardcal.datasets import alpacaeval_items as alpaca_items

__all__ = ["alpaca_items"]
