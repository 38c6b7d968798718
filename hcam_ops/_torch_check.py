"""The torch hcam_ops._C was compiled against, checked before it is loaded.

A C++ extension is bound to the torch it was built with: its C++ ABI (and
CUDA version) change between torch releases, and loading it into another
torch fails with an undefined symbol, or loads and misbehaves. setup.py
records the build's torch in hcam_ops/_build.py; this module compares it
with the running torch and says what to do in one line."""

from __future__ import annotations

import torch


def built_with() -> str | None:
    """The torch version the extension was compiled against (None: no record,
    e.g. a tree built before the record existed)."""
    try:
        from . import _build
    except ImportError:
        return None
    return _build.TORCH_VERSION


def mismatch_message(built: str, running: str) -> str | None:
    """The error for running the extension under ``running`` when it was
    built against ``built`` (None when they are the same release and CUDA
    flavour: the local part, '+cu130' or '+cpu', included)."""
    if built == running:
        return None
    return (
        f"hcam_ops was compiled against torch {built} but torch {running} is installed: "
        f"rebuild it against this torch (pip install --no-build-isolation -e . in the source tree) "
        f"or install the hcam_ops wheel built for torch {running}"
    )


def local_version(torch_version: str, cuda_version: str | None) -> str:
    """The local version label of a wheel (PEP 440, after the '+'): 'pt', the
    major and minor release of the torch it is built against, then 'cu' and
    the CUDA version the kernels are built with (torch.version.cuda), or 'cpu'
    for a wheel without CUDA kernels (cuda_version None).
    local_version("2.14.1+cu130", "13.0") == "pt214cu130";
    local_version("2.14.1+cu130", None) == "pt214cpu"."""
    major, minor = torch_version.partition("+")[0].split(".")[:2]
    if cuda_version is None:
        return f"pt{major}{minor}cpu"
    cuda_major, cuda_minor = cuda_version.split(".")[:2]
    return f"pt{major}{minor}cu{cuda_major}{cuda_minor}"


def check() -> None:
    built = built_with()
    if built is None:
        return
    message = mismatch_message(built, torch.__version__)
    if message:
        raise ImportError(message)
