"""Function docs rendered from Markdown, safely.

A function's description is its author's text, shown to every tenant that may call it:
it is rendered with markdown-it-py's CommonMark rules and raw HTML turned off, so any
`<script>` or `<img onerror=...>` in it is shown as text, and markdown-it's own link
check drops `javascript:`, `vbscript:`, `file:` and non-image `data:` links.
"""

from __future__ import annotations

import functools
import inspect

from markdown_it import MarkdownIt
from markupsafe import Markup


@functools.cache
def _parser() -> MarkdownIt:
    # "commonmark" with html off: no raw HTML, blocks or inline; tables and strikethrough on.
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
        ["table", "strikethrough"]
    )


def render_markdown(text: str | None) -> Markup:
    """HTML of a description written in Markdown (a docstring's indentation removed)."""
    if not text:
        return Markup("")
    return Markup(_parser().render(inspect.cleandoc(text)))
