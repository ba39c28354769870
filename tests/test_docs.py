"""The README is a front page and the pages under docs/ hold the rest: every relative link among them leads
to a file, and to a heading of it where the link names one (GitHub's anchors)."""

import re

from conftest import REPO

README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.M)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def _pages() -> list:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text (no code marks, no link targets) lowercased, every character
    but letters, digits, underscores, hyphens and spaces dropped, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set:
    """Every heading's anchor, the repeats numbered as GitHub numbers them (name, name-1, name-2, ...)."""
    seen, found = {}, set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        name = anchor(heading)
        found.add(f"{name}-{seen[name]}" if name in seen else name)
        seen[name] = seen.get(name, 0) + 1
    return found


def links(text: str) -> list:
    prose = _prose(text)
    return _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)


def _broken(page) -> list:
    broken, name = [], page.relative_to(REPO)
    for target in links(page.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{name}: {target} (no file {path})")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{name}: {target} (no heading #{fragment} in {path or page.name})")
    return broken


def test_anchors_follow_githubs_rules():
    assert anchor("Records to shards, at corpus scale") == "records-to-shards-at-corpus-scale"
    assert anchor("ELECTRA: replaced-token detection") == "electra-replaced-token-detection"
    assert anchor("Options of `mlmprep run`") == "options-of-mlmprep-run"
    assert anchor("manifest.json") == "manifestjson"
    assert anchor("train-tokenizer") == "train-tokenizer"
    assert anchor("With PyTorch & Hugging Face") == "with-pytorch--hugging-face"
    assert anchors("# A\n## B\n```\n# not a heading\n```\n## B\n") == {"a", "b", "b-1"}


def test_links_are_found_outside_code_only():
    text = '[a](x.md) `[b](y.md)` ![c](img.png "title")\n```\n[d](z.md)\n```\n[e]: ref.md\n'
    assert links(text) == ["x.md", "img.png", "ref.md"]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = _pages()
    assert len(pages) > 1, "docs/ holds no page"
    assert [b for page in pages for b in _broken(page)] == []


def test_the_readme_links_every_docs_page():
    readme = REPO / "README.md"
    targets = links(readme.read_text(encoding="utf-8"))
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in targets}
    assert [p.name for p in sorted((REPO / "docs").glob("*.md")) if p.resolve() not in linked] == []


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the detail to docs/"
