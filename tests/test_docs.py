"""The README and docs/ as a reader follows them: every relative link reaches a file, every anchor a heading."""

import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == []


def test_the_readme_is_a_front_door_and_the_code_map_names_every_layer():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 260
    code_map = readme[readme.index("## Code map") : readme.index("## Install")]
    layers = {p.name for p in (REPO / "lightning_asr").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers and all(f"`{layer}/`" in code_map for layer in layers)
