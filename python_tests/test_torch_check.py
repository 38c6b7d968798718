"""Importing hcam_ops under another torch than the one its extension was
compiled against is one clear ImportError, raised before _C is loaded (which
would otherwise fail with an undefined symbol, or load and misbehave)."""

import os
import subprocess
import sys

import pytest
import torch

from hcam_ops import _torch_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_build_records_this_torch():
    built = _torch_check.built_with()
    if built is None:
        pytest.skip("this tree's extension was built before setup.py recorded its torch")
    assert built == torch.__version__


@pytest.mark.parametrize(
    "built, running",
    [("2.14.1+cu130", "2.11.0+cu126"), ("2.14.1+cu130", "2.14.1+cpu"), ("2.14.1+cu130", "2.14.0+cu130")],
)
def test_mismatch_names_both_and_the_way_out(built, running):
    message = _torch_check.mismatch_message(built, running)
    assert message.startswith(f"hcam_ops was compiled against torch {built} but torch {running} is installed: ")
    assert "rebuild" in message and "\n" not in message


def test_same_torch_is_no_error():
    assert _torch_check.mismatch_message("2.14.1+cu130", "2.14.1+cu130") is None


def test_import_under_another_torch_fails_before_loading_the_extension():
    code = (
        "import sys, types\n"
        "record = types.ModuleType('hcam_ops._build')\n"
        "record.TORCH_VERSION = '2.11.0+cu126'\n"
        "sys.modules['hcam_ops._build'] = record\n"
        "try:\n"
        "    import hcam_ops\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "    print('hcam_ops._C' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"hcam_ops was compiled against torch 2.11.0+cu126 but torch {torch.__version__}")
    assert lines[1] == "False"


@pytest.mark.parametrize(
    "torch_version, cuda, label",
    [
        ("2.14.1+cu130", "13.0", "pt214cu130"),
        ("2.14.1+cu130", None, "pt214cpu"),
        ("2.11.0+cu128", "12.8", "pt211cu128"),
        ("2.11.0", None, "pt211cpu"),
        ("2.15.0.dev20270101+cu130", "13.0", "pt215cu130"),
        ("2.14.1", "13.0", "pt214cu130"),  # a CUDA torch without a local label (conda)
    ],
)
def test_wheel_local_version(torch_version, cuda, label):
    """scripts/build_wheel.sh's version label: torch's major and minor, then the CUDA of the kernels or cpu."""
    assert _torch_check.local_version(torch_version, cuda) == label
