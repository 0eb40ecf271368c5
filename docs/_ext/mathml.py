"""Render the documentation's formulas as MathML at build time (latex2mathml), so that the site needs no
JavaScript and no network: every current browser displays MathML natively."""

from __future__ import annotations

import html
from typing import Any

import latex2mathml.converter
from docutils import nodes


def _mathml(latex: str, display: str) -> str:
    try:
        return latex2mathml.converter.convert(latex.strip(), display=display)
    except Exception:  # a construct latex2mathml does not know: show the source rather than fail the build
        return f'<code class="math-source">{html.escape(latex)}</code>'


def _visit_math(self: Any, node: nodes.Element) -> None:
    self.body.append(_mathml(node.astext(), "inline"))
    raise nodes.SkipNode


def _visit_displaymath(self: Any, node: nodes.Element) -> None:
    blocks = [b for b in node.astext().split("\n\n") if b.strip()]
    body = "".join(_mathml(b, "block") for b in blocks)
    self.body.append(f'<div class="math notranslate nohighlight">{body}</div>\n')
    raise nodes.SkipNode


def setup(app: Any) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", (_visit_math, None), (_visit_displaymath, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
