"""torch array operations for the LOWESS engine (float64, CPU or CUDA tensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class TorchOps:
    """:class:`._lowess_ops.ArrayOps` over float64 / int64 tensors on ``device``."""

    xp: Any = torch

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    def array(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), device=self.device)

    def host(self, a: Any) -> np.ndarray:
        return a.detach().cpu().numpy()

    def zeros(self, shape: int | tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, dtype=torch.int64, device=self.device)

    def bincount(self, index: Any, weights: Any, size: int) -> torch.Tensor:
        return torch.bincount(index, weights=weights, minlength=size)

    def power_rows(self, v: Any, count: int) -> torch.Tensor:
        out = torch.empty((count, v.shape[0]), dtype=v.dtype, device=v.device)
        out[0] = 1.0
        out[1] = v
        for j in range(2, count):
            torch.mul(out[j - 1], v, out=out[j])
        return out

    def prefix_at(self, a: Any, ends: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        csum = torch.cumsum(a, dim=1)
        index = torch.as_tensor(ends - 1, device=self.device)
        return csum[:, index], csum[:, -1:]

    def cumsum0(self, a: Any) -> torch.Tensor:
        zero = torch.zeros((1, *a.shape[1:]), dtype=a.dtype, device=a.device)
        return torch.cat([zero, torch.cumsum(a, dim=0)], dim=0)

    def median(self, a: torch.Tensor) -> float:
        """``np.median`` semantics (``torch.median`` returns the lower middle value)."""
        n = a.shape[0]
        upper = torch.kthvalue(a, n // 2 + 1).values
        if n % 2:
            return float(upper)
        lower = torch.kthvalue(a, n // 2).values
        return float((lower + upper) / 2.0)

    def robustness_weights(self, y: Any, fit: Any, inverse: Any) -> torch.Tensor:
        """Bisquare of ``|resid| / (6 median |resid|)`` (statsmodels' rule)."""
        resid = (y - fit[inverse]).abs_()
        median = self.median(resid)
        if median == 0.0:
            return (resid == 0.0).to(torch.float64)
        t = resid.div_(6.0 * median).clamp_(max=1.0)
        t = 1.0 - t * t
        return t * t
