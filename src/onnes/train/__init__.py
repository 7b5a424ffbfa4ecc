"""Training: loop, data-parallel setup, checkpoints and resume, EMA."""
