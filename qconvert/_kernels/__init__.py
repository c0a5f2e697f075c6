"""Compiled kernels (built from kernels/*.pyx by setup.py). Import them through qconvert.quants."""
