"""The README fits on a screen and points into docs/, the manual (a MkDocs site): every audit
event type the code can write is listed there, and no link of either is broken or leads
outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audit.registry import audit_action_choices

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MAX_README_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
AUTOLINK = re.compile(r"<((?:https?|ftp)://[^>]+)>")


def without_code(text: str) -> str:
    """Markdown outside fenced and inline code: example URLs in commands are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    text = re.sub(r"^(    |\t).*$", "", text, flags=re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The heading ids MkDocs gives a page (toc's default slugify)."""
    found = set()
    for line in without_code(path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            text = re.sub(r"[`*]", "", heading.group(1)).strip().lower()
            text = re.sub(r"[^\w\- ]", "", text)
            found.add(re.sub(r"\s+", "-", text))
    return found


def links(path: Path) -> list[str]:
    text = without_code(path.read_text())
    return LINK.findall(text) + AUTOLINK.findall(text)


def test_readme_fits_on_a_screen_and_starts_with_its_title() -> None:
    lines = README.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README has {len(lines)} lines"
    assert lines[0] == "# kmsportal"  # the title first: no code block before it


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_the_docs_list_every_audit_event_type() -> None:
    manual = "\n".join(page.read_text() for page in PAGES)
    actions = [value for value, _ in audit_action_choices()]
    assert len(actions) > 40  # every app registered its types
    missing = [value for value in actions if f"`{value}`" not in manual]
    assert missing == []


@pytest.mark.parametrize("path", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_links_stay_inside_the_repository_and_resolve(path: Path) -> None:
    for target in links(path):
        assert not re.match(r"^(?:[a-z][a-z0-9+.-]*:|//)", target, re.I), (
            f"{path.name} links outside the repository: {target}"
        )
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
        assert resolved.exists(), f"{path.name}: {target} does not exist"
        if path.parent == DOCS:
            assert resolved.is_relative_to(DOCS), f"{path.name}: {target} is outside docs/"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{path.name}: no heading #{anchor} in {file_part}"


def test_every_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    missing = [page.name for page in PAGES if page.name not in config]
    assert missing == []


def test_the_link_check_catches_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text("[out](https://example.org) `[code](http://x)` <http://y>\n")
    assert links(sample) == ["https://example.org", "http://y"]
