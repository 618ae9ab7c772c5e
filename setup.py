"""The audit verification's per-row loop and tree fold in C against OpenSSL's libcrypto
(ADR 18): the one part of the build pyproject.toml cannot declare without setuptools warning,
at every install, that its `ext-modules` table is experimental. Everything else is in
pyproject.toml.

Optional: where they cannot be built (no compiler, no OpenSSL headers) the install goes on and
`stophub audit verify` runs the same checks in Python, more slowly.
"""

from setuptools import Extension, setup


def accelerator(name: str, source: str) -> Extension:
    return Extension(
        name,
        sources=[source],
        libraries=["crypto"],
        extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        optional=True,
    )


setup(
    ext_modules=[
        accelerator("hub.store._leafscan", "hub/store/_leafscan.c"),
        accelerator("hub.domain._merklefold", "hub/domain/_merklefold.c"),
        # SM2 with SM3 (ADR 23): without it, the sm2-sm3 algorithm says it is unavailable.
        accelerator("hub.crypto._sm2", "hub/crypto/_sm2.c"),
    ]
)
