"""The distributions: build the sdist and the wheel offline, install the wheel in a fresh
venv and use it from outside the checkout, and run a fast subset of the tests from the
unpacked sdist.

Deselect with ``python -m pytest -m "not packaging"``. Nothing is downloaded: the build
runs ``--no-isolation`` against the installed setuptools, and the venv is a clean one
(no system site-packages) that sees only the running interpreter's NumPy, through a
folder of links to NumPy's installed files, so neither the checkout nor an editable
install of tapegrad is importable there.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
JUNK = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", "_build",
                              ".pytest_cache", ".hypothesis", ".ruff_cache", ".venv*",
                              ".ipynb_checkpoints")


def _version(dist: str = "setuptools") -> tuple[int, ...]:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def _run(args: list[str | os.PathLike[str]], cwd: Path, timeout: float = 120,
         **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([os.fspath(a) for a in args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{args} exited {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build --no-isolation`` on a copy of the source tree: sdist, then the
    wheel built from that sdist (so the sdist is shown to be buildable)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("needs the 'build' package (in the dev extra): pip install -e '.[dev]'")
    if _version("setuptools") < (77,):
        pytest.skip("needs setuptools>=77 for the SPDX license field (in the dev extra)")
    base = tmp_path_factory.mktemp("dists")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=JUNK)
    out = base / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=base,
         timeout=300)
    (sdist,) = out.glob("tapegrad-*.tar.gz")
    (wheel,) = out.glob("tapegrad-*-py3-none-any.whl")
    return {"sdist": sdist, "wheel": wheel, "base": base}


def test_sdist_is_self_contained(dists):
    with tarfile.open(dists["sdist"]) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        files = {n.split("/", 1)[1] for n in names if "/" in n}
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    for needed in ["LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", "tapegrad/py.typed",
                   "tapegrad/__init__.py", "tests/test_engine.py", "tests/test_moons.py",
                   "tests/test_examples.py", "tests/test_docs.py", "examples/moons.py",
                   "examples/complex_viz.py", "examples/dag.py", "examples/optimize.py",
                   "examples/demo.ipynb", "docs/conf.py", "docs/index.rst", "docs/api.rst"]:
        assert needed in files, f"{needed} missing from the sdist"
    assert not [n for n in files if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in files if n.startswith("examples/") and n.endswith((".png", ".svg"))]
    assert "License-Expression: MIT" in pkg_info
    assert "Classifier: Typing :: Typed" in pkg_info


def test_wheel_ships_py_typed_license_and_the_command(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(f"{info}/METADATA").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    assert "tapegrad/py.typed" in names
    assert f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "docs/"))]
    assert "License-Expression: MIT" in metadata
    assert "Requires-Dist: numpy" in metadata
    for classifier in ["Programming Language :: Python :: 3.10",
                       "Programming Language :: Python :: 3.13",
                       "Operating System :: OS Independent", "Typing :: Typed",
                       "Topic :: Scientific/Engineering :: Mathematics"]:
        assert f"Classifier: {classifier}" in metadata
    assert "tapegrad = tapegrad.__main__:main" in entry_points


def _numpy_only(folder: Path) -> Path:
    """A folder holding links to the installed NumPy (package, .libs, dist-info) only."""
    dist = importlib.metadata.distribution("numpy")
    site = Path(dist.locate_file(""))
    folder.mkdir()
    tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
    for name in sorted(tops):
        target = site / name
        if target.exists():
            (folder / name).symlink_to(target, target_is_directory=target.is_dir())
    assert (folder / "numpy").exists()
    return folder


@pytest.fixture(scope="module")
def venv(dists) -> Path:
    """A clean venv (no system site-packages) with the wheel installed, offline."""
    if sys.platform == "win32":
        pytest.skip("the venv test links NumPy's files, which needs POSIX symlinks")
    if _version("pip") < (22, 3):
        pytest.skip("installing into the venv needs pip >= 22.3 (pip --python)")
    base = dists["base"]
    env_dir = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=base)
    python = env_dir / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=base).stdout.strip()
    numpy_dir = _numpy_only(base / "numpy-only")
    Path(purelib, "numpy_only.pth").write_text(f"{numpy_dir}\n")
    # pip from this interpreter installs into the venv (--python); numpy, the only
    # dependency, is found through the .pth, so nothing is downloaded
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index",
          "--disable-pip-version-check", dists["wheel"]], cwd=base, timeout=300)
    return env_dir


QUICKSTART = """
import importlib.metadata, importlib.resources, sys
import tapegrad
from tapegrad import Value
from tapegrad.nn import MLP

a = Value(-4.0)
b = Value(2.0)
c = a + b
d = a * b + b**3
c += c + 1
c += 1 + c + (-a)
d += d * 2 + (b + a).relu()
d += 3 * d + (b - a).relu()
e = c - d
f = e**2
g = f / 2.0
g += 10.0 / f
g.backward()
print(f"{g.data:.4f}  {a.grad:.4f}  {b.grad:.4f}")
model = MLP(2, [4, 1])
loss = sum((model([Value(0.5), Value(-1.0)]) - 1.0) ** 2 for _ in range(3))
loss.backward()
print("params", len(model.parameters()))
print("file", tapegrad.__file__)
print("typed", importlib.resources.files("tapegrad").joinpath("py.typed").is_file())
print("license", importlib.metadata.metadata("tapegrad")["License-Expression"])
print("prefix", sys.prefix)
"""


def test_wheel_installs_in_a_clean_venv_and_runs_outside_the_checkout(venv, tmp_path):
    python = venv / "bin" / "python"
    script = tmp_path / "quickstart.py"
    script.write_text(QUICKSTART)
    out = _run([python, script], cwd=tmp_path).stdout
    assert "24.7041  138.8338  645.5773" in out
    assert "params 17" in out
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    installed = Path(lines["file"])
    assert installed.is_relative_to(venv.resolve()) or installed.is_relative_to(venv)
    assert not installed.is_relative_to(ROOT)
    assert lines["typed"] == "True" and lines["license"] == "MIT"
    # the checkout is not reachable from the venv, even from the checkout's own folder
    here = _run([python, "-c", "import tapegrad; print(tapegrad.__file__)"], cwd=tmp_path)
    assert Path(here.stdout.strip()) == installed
    cannot = subprocess.run([python, "-c", "import pytest"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True)
    assert cannot.returncode != 0, "the venv should see NumPy only, not the dev tools"


def test_installed_command_runs(venv, tmp_path):
    help_text = _run([venv / "bin" / "tapegrad", "--help"], cwd=tmp_path).stdout
    assert "usage: tapegrad" in help_text and "profile" in help_text
    version = _run([venv / "bin" / "python", "-m", "tapegrad", "--version"], cwd=tmp_path)
    assert version.stdout.strip().startswith("tapegrad ")
    script = tmp_path / "tiny.py"
    script.write_text("from tapegrad import Value\n"
                      "x = Value(3.0)\ny = (x * x + 1).relu()\ny.backward()\n"
                      "print('grad', x.grad)\n")
    report = _run([venv / "bin" / "tapegrad", "profile", "--no-progress", script],
                  cwd=tmp_path).stdout
    assert "grad 6.0" in report and "tapegrad profile" in report


def test_tests_run_from_the_unpacked_sdist(dists, tmp_path):
    with tarfile.open(dists["sdist"]) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path, filter="data")
        else:                                   # Python < 3.10.12 / 3.11.4
            tar.extractall(tmp_path)
    (unpacked,) = tmp_path.glob("tapegrad-*")
    where = _run([sys.executable, "-c", "import tapegrad; print(tapegrad.__file__)"],
                 cwd=unpacked).stdout.strip()
    assert Path(where).is_relative_to(unpacked), where       # the sdist's code is tested
    proc = _run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                 "tests/test_engine.py", "tests/test_moons.py",
                 "-k", "not micrograd and not picture and not replay"], cwd=unpacked, timeout=300)
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 30 and "failed" not in proc.stdout, proc.stdout
