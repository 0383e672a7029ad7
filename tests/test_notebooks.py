"""The notebooks' shape (nbval runs them; this checks what running cannot): each one's first
code cell is its parameters cell, tagged for papermill and setting PROFILE, and no notebook is
committed with outputs (every number shown comes from running it)."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_first_and_no_stored_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    assert "PROFILE = " in "".join(code[0]["source"])
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_every_numbered_notebook_is_listed_in_the_readme():
    readme = (NOTEBOOKS[0].parent / "README.md").read_text()
    assert [p.name for p in NOTEBOOKS if p.name not in readme] == []
