"""The benchmark datasets of the prompt-learning literature, laid out as CoOp's DATASETS.md says.

`load_dataset` (training/data.py) calls `load_benchmark` first; it returns None for a folder that
is not one of these layouts, so any other folder still loads generically.
"""

from training.datasets.benchmarks import BENCHMARKS, Benchmark, load_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "load_benchmark"]
