"""Training loops, losses, checkpoints."""
