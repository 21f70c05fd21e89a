"""Models, losses, optimizers, data and the trainer (issue 5). Placeholder."""
__all__: list = []
