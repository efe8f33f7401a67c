"""The README and docs/ link only inside the repository, and every relative
link (and its #anchor, for a markdown target) resolves: a clone has no
`../shared/...`, and a page moved or renamed breaks this test, not a reader."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code removed: `[a](b)` in code is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def markdown_links(text: str) -> list[str]:
    prose = without_code(text)
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", markdown.read_text())):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def link_problems(markdown: Path, repo: Path) -> list[str]:
    """Each link in `markdown` that leaves `repo` or does not resolve, with why."""
    problems = []
    root = repo.resolve()
    for target in markdown_links(markdown.read_text()):
        where = f"{markdown.relative_to(repo)}: ({target})"
        if SCHEME.match(target) or target.startswith(("/", "//")):
            problems.append(f"{where} points outside the repository")
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (markdown.parent / path_part).resolve() if path_part else markdown.resolve()
        if resolved != root and root not in resolved.parents:
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where} does not resolve: no {resolved.relative_to(root)}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{where} names no heading #{fragment} in {resolved.relative_to(root)}")
    return problems


def documentation() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_link_in_readme_and_docs_resolves_inside_the_repository() -> None:
    pages = documentation()
    assert len(pages) > 1, f"no docs/*.md beside README.md in {REPO}"
    links = [target for page in pages for target in markdown_links(page.read_text())]
    assert len(links) > 20, f"found only {len(links)} links: is the link pattern still right?"
    problems = [problem for page in pages for problem in link_problems(page, REPO)]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = REPO / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in markdown_links(readme.read_text())}
    unlinked = [p.name for p in documentation()[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_negative_control_the_checker_catches_bad_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# Real page\n\n## A section\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[fine](docs/real.md) [fine anchor](docs/real.md#a-section) ![img](docs/real.md)\n"
        "[made up](docs/made-up.md) [outside](../shared/DESIGN.md) [web](https://example.org/)\n"
        "[abs](/etc/passwd) [bad anchor](docs/real.md#no-such-section)\n"
        "`[in code](docs/missing-in-code.md)`\n"
        "```\n[in a fence](docs/missing-in-fence.md)\n```\n"
    )
    problems = link_problems(page, tmp_path)
    assert len(problems) == 5, "\n".join(problems)
    assert "(docs/made-up.md) does not resolve" in problems[0]
    assert "(../shared/DESIGN.md) points outside" in problems[1]
    assert "(https://example.org/) points outside" in problems[2]
    assert "(/etc/passwd) points outside" in problems[3]
    assert "names no heading #no-such-section" in problems[4]


def test_slugs_follow_githubs_anchors() -> None:
    assert slug("Configuration: the kernel command line") == "configuration-the-kernel-command-line"
    assert slug("kmod as the kernel's modprobe") == "kmod-as-the-kernels-modprobe"
    assert slug("The root move instead of `switch_root`") == "the-root-move-instead-of-switch_root"
    assert slug("`qemu/run`") == "qemurun"
