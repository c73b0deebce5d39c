"""`presenter lipsync` and `presenter swap`: the offline tools on the live path's driver and renderer seams."""
from __future__ import annotations

import argparse


def add_offline_commands(sub: argparse._SubParsersAction, formatter: type) -> None:
    """Register the offline commands on the top-level parser."""
