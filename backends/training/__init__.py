"""One training script per model: ``python -m backends.training.<model>``, fixed seed, minutes on a CPU.

Each module exposes a ``Trainer`` whose ``step()`` does one optimizer step and returns its losses,
so the same loop runs from the command line and, as a job the worker steps, inside the app.
"""
