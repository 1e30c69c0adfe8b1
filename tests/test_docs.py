"""The API reference builds from the docstrings with warnings as errors (docs/conf.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"

DOCUMENTED = [
    "tapegrad.Value", "tapegrad.Value.backward", "tapegrad.Tape", "tapegrad.Tape.stats",
    "tapegrad.Tape.forward", "tapegrad.Function", "tapegrad.Function.value_and_grad",
    "tapegrad.current_tape", "tapegrad.scope", "tapegrad.detect_anomaly", "tapegrad.profile",
    "tapegrad.ResetTapeError", "tapegrad.GuardError", "tapegrad.grad",
    "tapegrad.Function.jacobian", "tapegrad.Function.jvp", "tapegrad.Function.vjp",
    "tapegrad.Function.hessian", "tapegrad.Function.hvp", "tapegrad.Function.jacobian_sparsity",
    "tapegrad.Function.hessian_sparsity", "tapegrad.set_kernels", "tapegrad.kernels",
    "tapegrad.nn.Module", "tapegrad.nn.Neuron", "tapegrad.nn.Layer", "tapegrad.nn.MLP",
    "tapegrad.optim.SGD", "tapegrad.optim.Adam",
    "tapegrad.viz.draw_dot", "tapegrad.viz.render_dot", "tapegrad.viz.save_dot",
    "tapegrad.viz.export_dot",
]


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("needs Sphinx (in the dev extra): pip install -e '.[dev]'")
    if not (DOCS / "conf.py").is_file():
        pytest.skip("docs/conf.py is not here (an install without the sources)")
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"Sphinx warnings or errors:\n{proc.stderr}{proc.stdout}"
    return out


def test_api_reference_builds_without_warnings(html):
    assert (html / "index.html").is_file() and (html / "api.html").is_file()


@pytest.mark.parametrize("name", DOCUMENTED)
def test_api_reference_documents(html, name):
    page = (html / "api.html").read_text(encoding="utf-8")
    assert f'id="{name}"' in page, f"{name} is not in the API reference"
