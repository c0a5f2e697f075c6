"""Build the Cython kernels in kernels/*.pyx as qconvert._kernels.<name> extension modules.

Compiled without FMA contraction: ggml's reference quantizers are plain C float arithmetic, and
a fused multiply-add rounds once where C rounds twice, which changes a byte now and then.
"""
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math"]

extensions = [
    Extension(
        f"qconvert._kernels.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        extra_compile_args=FLAGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted(Path("kernels").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False,
    }),
)
