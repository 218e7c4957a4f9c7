"""Integrations with what lies outside: MLflow (``tracking``, ``plotting``, ``pyfunc_model``),
gymnasium, torch.distributed, checkpoint files and exported policies. They serve the shell.
"""
