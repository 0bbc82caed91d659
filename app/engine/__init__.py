"""Serving engine: backbone + posterior artifact -> Monte Carlo predictions; no HTTP here.

Import from the modules (`app.engine.engine`, `app.engine.errors`): this package file stays
empty so that importing the errors does not pull in torch.
"""
