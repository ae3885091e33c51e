"""Benchmarks of cprl_fast's fused ops against eager PyTorch and torch.compile.

- ``bench/cases.py``: the cases (op, shape, provider, pass) and their minimum bytes moved.
- ``bench/timing.py``: timers (CUDA events on a GPU, wall clock on the CPU), copy bandwidth,
  saved-activation memory.
- ``python -m bench.run``: times every case once, prints a table, writes JSON.
- ``bench/test_ops.py``: the same cases as a pytest-benchmark suite; ``python -m bench.report``
  prints a table from its saved JSON.
"""
