"""Plain text out of markup: Markdown front matter/headings and HTML (stdlib `html.parser`)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

__all__ = ["html_to_text", "markdown_title", "split_front_matter"]

_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S)
_HEADING_RE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)


def split_front_matter(text: str) -> tuple[dict[str, Any], str, str | None]:
    """Split YAML front matter off a Markdown text.

    Returns:
        (front matter mapping, body, error message or None). Text without front matter gives
        ({}, text, None); unparsable front matter gives ({}, body, "<error>").
    """
    match = _FRONT_MATTER_RE.match(text)
    if not match:
        return {}, text, None
    import yaml

    body = text[match.end() :]
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return {}, body, f"invalid YAML front matter: {str(exc)[:200]}"
    if data is None:
        return {}, body, None
    if not isinstance(data, dict):
        return {}, body, f"front matter is a {type(data).__name__}, not a mapping"
    return {str(k): v for k, v in data.items()}, body, None


def markdown_title(body: str) -> str | None:
    """The first level-1 ATX heading ("# Title"), if any."""
    match = _HEADING_RE.search(body)
    return match.group(1).strip() if match else None


_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl", "dt",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "thead",
        "tfoot", "tr", "ul",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_SPACES_RE = re.compile(r"[^\S\n]+")
_BLANKS_RE = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip = 0
        self._pre = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "pre":
            self._pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in _CELL_TAGS and self.parts and not self.parts[-1].endswith("\n"):
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip:
            self.parts.append(data if self._pre else data.replace("\n", " "))


def html_to_text(html: str) -> tuple[str, str | None]:
    """Visible text of an HTML page (scripts/styles dropped, blocks on their own lines).

    Returns:
        (text, <title> or None).
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (_SPACES_RE.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = _BLANKS_RE.sub("\n\n", "\n".join(lines)).strip()
    title = " ".join("".join(parser.title_parts).split())
    return text, title or None
