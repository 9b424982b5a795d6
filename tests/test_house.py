"""The package as a user installs it: `pip install .` into a fresh virtual environment, the console
scripts from another directory (a shipped config by name, a sweep spec by path), and every tool's
mistake ending in one `error:` line, both as `python -m gpt2jax.TOOL` and as `gpt2jax-TOOL`."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import ROOT

TOOLS = ("prepare", "train", "sample", "evaluate", "convert", "plan", "bench", "sweep", "analyze", "detect")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with gpt2jax installed from a copy of the sources (not editable). Its dependencies
    come from the test environment through a .pth line, so nothing is downloaded."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gpt2jax", src / "gpt2jax", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    pathlib.Path(purelib, "test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    res = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--no-build-isolation", str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return venv


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPT2JAX_DEBUG")}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = ""
    return env


def _run(cmd, cwd, timeout=300):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_console_scripts_work_from_another_directory(installed, tmp_path, shakespeare_dir):
    bindir = installed / "bin"
    for tool in TOOLS:
        assert (bindir / f"gpt2jax-{tool}").exists(), tool
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed package, not the checkout, is what runs.
    res = _run([bindir / "python", "-c", "import gpt2jax; print(gpt2jax.__file__)"], elsewhere)
    assert str(installed) in res.stdout, res.stdout
    res = _run([bindir / "gpt2jax-train", "--config=tiny", f"--workdir={tmp_path / 'run'}",
                f"--config.data.dir={shakespeare_dir}", "--config.train.num_steps=2", "--config.train.eval_every=0",
                "--config.train.log_every=1", "--config.checkpoint.every=2"], elsewhere, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run" / "run.json").exists()
    spec = tmp_path / "spec.py"
    spec.write_text("from gpt2jax.scaling import Run, Sweep\n\n\ndef get_sweep():\n"
                    "    return Sweep(runs=[Run('a', 'tiny', {'train.num_steps': 2}), "
                    "Run('b', 'gpt2_124m', {'train.num_steps': 2})])\n")
    res = _run([bindir / "gpt2jax-sweep", spec, f"--root={tmp_path / 'sweep'}", "--dry_run"], elsewhere)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 runs" in res.stdout and f"--workdir={tmp_path / 'sweep'}/a" in res.stdout, res.stdout[-2000:]


def _mistakes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    missing = tmp_path / "missing"
    return {
        "prepare": ["--source=no_such_source", f"--out_dir={tmp_path / 'd'}"],
        "train": ["--config=tiny", f"--workdir={tmp_path / 'w'}", f"--config.data.dir={missing}"],
        "sample": [f"--workdir={missing}"],
        "evaluate": [f"--workdir={missing}", "--tasks=lambada"],
        "convert": [f"--from_hf={empty}", f"--workdir={tmp_path / 'c'}"],
        "plan": ["--config=tiny", "--devices=-2"],
        "bench": ["--config=tiny", "--steps=0"],
        "sweep": [missing / "spec.py", f"--root={tmp_path / 'r'}"],
        "analyze": [f"--root={missing}"],
        "detect": [f"--workdir={missing}", "--text=to be or not to be"],
    }


# As `python -m gpt2jax.TOOL` every tool's mistakes are covered case by case in tests/test_misuse2.py; here each
# installed console script once (the installed package, run from another directory).
@pytest.mark.parametrize("how", ["console script"])
def test_every_tool_ends_a_mistake_in_one_line(installed, tmp_path, how):
    for tool, args in _mistakes(tmp_path).items():
        cmd = ([installed / "bin" / "python", "-m", f"gpt2jax.{tool}"] if how == "python -m"
               else [installed / "bin" / f"gpt2jax-{tool}"])
        res = _run([*cmd, *args], tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode in (1, 2), (tool, res.returncode, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, (tool, res.stderr[-2000:])
        assert lines and lines[-1].startswith("error: "), (tool, res.stderr[-2000:])
        assert len(lines[-1]) > len("error: ") + 10, (tool, lines[-1])


def _imports(root: pathlib.Path):
    """{module: {gpt2jax modules it imports, at module level or inside functions}} for gpt2jax/."""
    import ast

    mods = {}
    for p in (root / "gpt2jax").rglob("*.py"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    edges = {}
    for m, (p, is_pkg) in mods.items():
        out = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = m.split(".") if is_pkg else m.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)]
                    pkg = ".".join(base + ([node.module] if node.module else []))
                else:
                    pkg = node.module or ""
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m:
                    out.add(t)
        edges[m] = out
    return edges


def test_no_import_cycles():
    edges = _imports(ROOT)
    assert len(edges) > 20
    state, cycles = {}, []

    def visit(v, path):
        state[v] = "open"
        for w in sorted(edges[v]):
            if state.get(w) == "open":
                cycles.append(path[path.index(w):] + [w])
            elif w not in state:
                visit(w, path + [w])
        state[v] = "done"

    for v in sorted(edges):
        if v not in state:
            visit(v, [v])
    assert not cycles, cycles
