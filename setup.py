"""The compiled top-k selection (recsys/_topk.c); everything else is in pyproject.toml.

`optional=True`: without a C compiler the package still installs, and scoring uses its pure
torch selection, which gives the same lists (recsys/score.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # -ffp-contract=off: the rescoring's fp32 steps stay the ones its torch twin takes
        Extension(
            "recsys._topk",
            ["recsys/_topk.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
