"""Training: device choice, losses, checkpoints and the epoch loop."""
