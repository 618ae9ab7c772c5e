"""The audit verification's per-row loop in C against OpenSSL's libcrypto (ADR 18): the one
part of the build pyproject.toml cannot declare without setuptools warning, at every install,
that its `ext-modules` table is experimental. Everything else is in pyproject.toml.

Optional: where it cannot be built (no compiler, no OpenSSL headers) the install goes on and
`stophub audit verify` runs the same checks in Python, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hub.store._leafscan",
            sources=["hub/store/_leafscan.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
            optional=True,
        )
    ]
)
