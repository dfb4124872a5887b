"""The compiled part of the package: the page scanner of curation/cc/html_scan.py in C.

Everything else is configured in pyproject.toml; `pip install -e .` (make setup) builds it in place.
It is optional: where no C compiler is found the install still succeeds, and the extractor runs
the same scanner in Python (curation/cc/html_scan.py), ~14x slower, with a warning.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "curation.cc._html_scan",
            ["curation/cc/_html_scan.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
