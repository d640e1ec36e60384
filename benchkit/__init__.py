"""What the benchmarks (bench/) and the GPU check (scripts/gpu_check.py) share.

- ``processes``: server processes in their own process group (logs, readiness, CPU time,
  stopped with the whole group), free ports;
- ``load``: the closed-loop load generator (concurrent clients, latency percentiles);
- ``texts``: AlpacaEval items for load (read by ``rewardcal.datasets``, the one loader);
- ``tiny_models``: tiny reward models built offline (also the tests' fixtures).

Not part of the service: a checkout imports it with the repository root on ``sys.path``
(bench scripts and gpu_check.py put it there; pytest does for the tests), and the GPU image
copies the folder next to the check (Dockerfile).
"""
