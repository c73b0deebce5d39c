"""`presenter bench networks`: per-network, per-backend timings against the machine's in-run matmul rate."""
from __future__ import annotations

import argparse


def add_bench_networks_command(bsub: argparse._SubParsersAction, formatter: type) -> None:
    """Register `presenter bench networks` under `presenter bench`."""
