"""Triton kernels of cprl_fast, installed as the package ``cprl_fast.kernels``."""

OPS: dict = {}
