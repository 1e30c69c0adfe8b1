"""README's Python blocks and the examples, run at small sizes through their flags."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tapegrad import Tape

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"

if not EXAMPLES.is_dir():
    pytest.skip(f"{EXAMPLES} is not here: these tests need the examples/ folder of a "
                "checkout or of the sdist", allow_module_level=True)


def _env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that imports this checkout's tapegrad."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _load(name: str):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- README ------------------------------------------------------------------------------

def readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                      flags=re.DOTALL | re.MULTILINE)


def test_readme_python_blocks_run_as_they_are(tmp_path):
    blocks = readme_python_blocks()
    assert len(blocks) >= 3, "README.md should hold the quickstart and replay snippets"
    source = "\n".join(blocks)
    if "draw_dot" in source and (importlib.util.find_spec("pydot") is None
                                 or shutil.which("dot") is None):
        pytest.skip("README's picture snippet needs pydot and Graphviz's dot "
                    '(pip install "tapegrad[viz]"; apt-get install graphviz)')
    script = tmp_path / "readme.py"
    # one script, blocks in order (later blocks may use names from earlier ones)
    script.write_text("\n\n".join(f"# --- README block {k}\n{b}" for k, b in enumerate(blocks)))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the outputs README's comments promise
    checked = 0
    for promised in re.findall(r"print\(.*?\)\s*#\s*(.+)$", source, flags=re.MULTILINE):
        promised = promised.strip()
        if re.fullmatch(r"[-\w.,:; ]+\d[-\w.,:; ]*", promised):    # literal output, not prose
            assert promised in proc.stdout, f"README promises {promised!r}:\n{proc.stdout}"
            checked += 1
    assert checked >= 2, "README's quickstart and replay snippets show their output"


# -- examples/dag.py ---------------------------------------------------------------------

def test_dag_prints_stats_and_backward_times(capsys):
    dag = _load("dag")
    with Tape("dag-test") as tape:
        assert dag.main(["--ops", "20000", "--seed", "1", "--width", "200"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert re.fullmatch(r"20,\d{3} ops; d root / d x0 = \S+", lines[0])
    assert "leaves" in lines[1] and "levels" in lines[1]          # tape.stats()
    assert re.search(r"^backward 1: [\d.]+ ms", out, flags=re.MULTILINE)
    assert re.search(r"^backward 2: [\d.]+ ms", out, flags=re.MULTILINE)
    assert len(tape) > 20000


def test_dag_positional_count_matches_the_profiling_walkthrough(capsys):
    dag = _load("dag")
    with Tape():
        dag.main(["3000", "--no-stats"])
    first = capsys.readouterr().out.splitlines()[0]
    with Tape():
        dag.main(["--ops", "3000", "--seed", "0", "--no-stats"])
    assert capsys.readouterr().out.splitlines()[0] == first
    leaves, root, made = dag.build(3000, 0, 1000)      # the walk-through's shape
    assert len(leaves) == 1000 and made >= 3000


def test_dag_under_the_profiler(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tapegrad", "profile", "--no-progress",
         str(EXAMPLES / "dag.py"), "--ops", "5000", "--no-stats"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ops; d root / d x0 = " in proc.stdout and "backward" in proc.stdout


# -- examples/optimize.py ----------------------------------------------------------------

@pytest.fixture(scope="module")
def optimize():
    pytest.importorskip("scipy", reason='examples/optimize.py needs SciPy '
                                        '(pip install "tapegrad[examples]")')
    return _load("optimize")


def test_optimize_rosenbrock_matches_rosen_der_and_converges(optimize, capsys):
    assert optimize.main(["rosen", "--n", "30"]) == 0
    out = capsys.readouterr().out
    assert "Rosenbrock, n = 30" in out and "scipy.optimize.rosen agrees: True" in out
    assert "ok: gradient matches rosen_der, minimum at x = 1" in out
    assert re.search(r"after \d+ iterations", out)


def test_optimize_net_is_in_equilibrium(optimize, capsys):
    assert optimize.main(["net", "--grid", "5"]) == 0
    out = capsys.readouterr().out
    assert "5 x 5 masses: 75 coordinates" in out
    assert "ok: the ring carries the weight, the shape is symmetric" in out


def test_optimize_function_gradient_matches_finite_differences(optimize):
    import numpy as np

    from tapegrad import Function, Value

    net = optimize.Net(3)
    with Tape():
        xs = [Value(0.0) for _ in range(net.n_params)]
        energy = net.energy(xs)
    fn = Function(xs, energy)
    x = net.start() + np.random.default_rng(0).normal(0, 0.01, net.n_params)
    value, grad = fn.value_and_grad(x)
    assert value == pytest.approx(net.energy_numpy(x), rel=1e-12)
    eps = 1e-6
    for i in (0, 5, net.n_params - 1):
        e = np.zeros_like(x)
        e[i] = eps
        fd = (net.energy_numpy(x + e) - net.energy_numpy(x - e)) / (2 * eps)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_optimize_rejects_bad_sizes(optimize, capsys):
    with pytest.raises(SystemExit) as info:
        optimize.main(["rosen", "--n", "1"])
    assert info.value.code == 2 and "--n must be at least 2" in capsys.readouterr().err


# -- examples/complex_viz.py -------------------------------------------------------------

def test_complex_viz_writes_the_two_pictures(tmp_path):
    pytest.importorskip("pydot", reason='needs pydot: pip install "tapegrad[viz]"')
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "complex_viz.py"), "--expression", "e.dot",
         "--neuron", "n.dot"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "e.dot").read_text().startswith("digraph")
    assert "wrote" in proc.stdout and "n.dot" in proc.stdout


def test_complex_viz_without_pydot_says_what_to_install(tmp_path):
    hide_pydot = ("import runpy, sys; sys.modules['pydot'] = None; "
                  f"sys.argv = [{str(EXAMPLES / 'complex_viz.py')!r}]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", hide_pydot], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "tapegrad[viz]"' in lines[0]
    assert "graphviz" in lines[0].lower()
    assert not list(tmp_path.iterdir())


# -- examples/demo.ipynb -----------------------------------------------------------------

def test_demo_notebook_runs_and_draws(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="needs nbformat (in the dev extra)")
    nbclient = pytest.importorskip("nbclient", reason="needs nbclient (in the dev extra)")
    pytest.importorskip("ipykernel", reason="needs ipykernel (in the dev extra)")
    pytest.importorskip("pydot", reason='the notebook draws a graph: pip install "tapegrad[viz]"')
    if shutil.which("dot") is None:
        pytest.skip("the notebook's graph needs Graphviz's dot program (apt-get install graphviz)")
    nb = nbformat.read(EXAMPLES / "demo.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        "store examples/demo.ipynb with its outputs cleared"
    nb.cells.append(nbformat.v4.new_code_cell(
        "import tapegrad; print('TAPEGRAD_FILE', tapegrad.__file__)"))
    for key, value in _env(TAPEGRAD_DEMO_STEPS="2").items():     # the kernel's environment
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)              # the notebook's inline backend
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     startup_timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [out for cell in nb.cells for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    kinds = {kind for out in outputs for kind in out.get("data", {})}
    assert "image/png" in kinds and "image/svg+xml" in kinds
    text = "".join(out.get("text", "") for out in outputs)
    assert "step 1 loss" in text and "step 2 loss" not in text       # TAPEGRAD_DEMO_STEPS
    assert "number of parameters 337" in text
    used = re.search(r"TAPEGRAD_FILE (\S+)", text).group(1)
    assert Path(used).resolve().is_relative_to(ROOT), used


# -- examples/dask_sensitivity.py --------------------------------------------------------

def test_dask_sensitivity_runs_small_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed", reason='needs Dask (pip install "tapegrad[dask]")')
    pytest.importorskip("matplotlib")
    out = tmp_path / "s.png"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "dask_sensitivity.py"), "--n", "20000", "--chunk",
         "5000", "--no-progress", "--out", str(out)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^20,000 samples in [\d.]+ s", proc.stdout, flags=re.MULTILINE)
    assert out.stat().st_size > 10_000
