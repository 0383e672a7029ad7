"""Executable documentation: every Python block of the README runs, in order, in one namespace
(smoke-sized: the README's examples train for seconds), and every docstring example in the
package passes as a doctest."""
import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import dpm_lab
from dpm_lab.data import SLICE_FILE
from dpm_lab.paths import data_roots

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(readme_blocks()) >= 4


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    slice_root = next((r for r in data_roots() if (r / SLICE_FILE).exists()), None)
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("DPM_LAB_PROFILE", raising=False)
    if slice_root is not None:
        monkeypatch.setenv("DPM_LAB_DATA", str(slice_root))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(readme_blocks()):
        if slice_root is None:  # a clone without the offline slice: generated data instead
            block = block.replace('"cifar10-slice"', '"synthetic"')
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # say which block failed
            pytest.fail(f"README python block {i + 1} raised {type(err).__name__}: {err}")


def test_package_docstring_examples():
    attempted = 0
    for info in pkgutil.walk_packages(dpm_lab.__path__, "dpm_lab."):
        if info.name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, info.name
        attempted += result.attempted
    assert attempted > 0
