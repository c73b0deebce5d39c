"""`presenter export MODEL --format onnx -o DIR`: ONNX graphs of the inference networks with meta.json."""
from __future__ import annotations

import argparse


def add_export_command(sub: argparse._SubParsersAction, formatter: type) -> None:
    """Register `presenter export` on the top-level parser."""
