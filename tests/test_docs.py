"""Executable documentation: every Python block of the README and of each page in docs/ runs, in
order, in one namespace per page (smoke-sized: the examples train for seconds); every relative
link of those pages points at a file (and heading) that exists; and every docstring example in
the package passes as a doctest."""
import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import dpm_lab
from dpm_lab.training.data import SLICE_FILE
from dpm_lab.training.paths import data_roots

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
# The front page stays a front page (issue 27): what it says at more length belongs in docs/.
README_MAX_BYTES = 12 * 1024
# [text](target) and ![alt](target), with an optional "title"; the target is group 1.
LINK = re.compile(r'!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+"[^"]*")?\)')


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def relative_links(page: Path) -> list[str]:
    """The link targets of ``page`` that are paths in this repository (no scheme such as
    ``https:``); code, fenced or inline, is left out: a link written there is text."""
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
    return [t for t in LINK.findall(text) if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", t)]


def anchors(page: Path) -> set[str]:
    """The fragment GitHub gives each heading of ``page``: lower case, every character that is
    not a letter, digit, space or hyphen dropped, spaces as hyphens; repeats get -1, -2, ..."""
    seen: dict[str, int] = {}
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def test_readme_and_docs_have_python_examples():
    assert python_blocks(README), "the README shows no Python example"
    assert DOCS, "docs/ holds no page"
    assert sum(len(python_blocks(p)) for p in DOCS) >= 4


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size < README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def broken_links(pages: list[Path]) -> tuple[int, list[str]]:
    """How many relative links ``pages`` hold, and those whose file, or heading in a Markdown
    file, does not exist."""
    checked, broken = 0, []
    for page in pages:
        for target in relative_links(page):
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            checked += 1
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    return checked, broken


def test_every_relative_link_resolves():
    checked, broken = broken_links(PAGES)
    assert broken == []
    assert checked > 0


def test_link_check_catches_a_missing_file_and_heading(tmp_path):
    """Code (inline or fenced) and external links are not links to check; a missing file and a
    missing heading are caught, and repeated headings get GitHub's -1 suffix."""
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A title: with `code`\n\n## A title: with code\n")
    page.write_text('[ok](other.md#a-title-with-code-1) ![img](missing.png "t") [self](#nowhere) '
                    "[web](https://example.org) `[x](nope)`\n```\n[in](fence.md)\n```\n"
                    "[bad](other.md#nowhere)\n")
    assert anchors(tmp_path / "other.md") == {"a-title-with-code", "a-title-with-code-1"}
    assert broken_links([page]) == (4, ["page.md: missing.png (no such file)",
                                        "page.md: #nowhere (no such heading)",
                                        "page.md: other.md#nowhere (no such heading)"])


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    slice_root = next((r for r in data_roots() if (r / SLICE_FILE).exists()), None)
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("DPM_LAB_PROFILE", raising=False)
    if slice_root is not None:
        monkeypatch.setenv("DPM_LAB_DATA", str(slice_root))
    monkeypatch.chdir(tmp_path)
    name = page.relative_to(ROOT)
    namespace: dict = {}  # one per page: a page's examples build on each other, not on another page's
    for i, block in enumerate(python_blocks(page)):
        if slice_root is None:  # a clone without the offline slice: generated data instead
            block = block.replace('"cifar10-slice"', '"synthetic"')
        try:
            exec(compile(block, f"{name} python block {i + 1}", "exec"), namespace)
        except Exception as err:  # say which block failed
            pytest.fail(f"{name} python block {i + 1} raised {type(err).__name__}: {err}")


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
