"""Training and validation: tasks, losses, metrics, the trainer and distributed launch."""
