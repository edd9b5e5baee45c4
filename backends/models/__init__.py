"""Small generative models trained here on procedural data; their weights are in assets/weights/.

Loaded through :func:`backends.models.cache.cached_model`, one copy per file version and device.
"""
