"""Run tritonserver from the PyPI wheels: backends.py prepares its backend directory, flags.py its command line,
processes.py stops it and cleans up after it, launch.py starts one and waits for it, supervise.py keeps one serving."""

from conventions import ROOT  # noqa: F401 (server.ROOT: the checkout, as everywhere)
