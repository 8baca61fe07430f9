"""Training: data, loop and checkpoints."""
