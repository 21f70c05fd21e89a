"""Layers, cells, interop and save/load (issue 4). Placeholder: filled in by the layers work."""
__all__: list = []
