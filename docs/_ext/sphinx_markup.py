"""A griffe extension: read channels_runtime's Sphinx-flavoured docstrings as Markdown.

The library's docstrings are written in reStructuredText habits: ``:class:`X```
roles, ``literal`` spans and ``::`` before an indented example. mkdocstrings
renders docstrings as Markdown, where double-backtick spans already work but
roles and ``::`` do not. Rather than editing the library, this extension
rewrites each docstring when the package is loaded:

* ``:role:`target``` (``class``, ``func``, ``meth``, ``mod``, ``attr``, ``exc``,
  ``data``, ``obj``) becomes an optional cross-reference. The target is
  resolved from the scope of the object the docstring belongs to, as Sphinx
  would. If the page set has no anchor for it, autorefs renders plain code
  instead of failing the strict build. ``~`` (show the last part only) and
  ``title <target>`` are honoured.
* A paragraph ending in ``::`` ends in ``:``, and the indented block after it
  becomes a fenced ``python`` block.
* A definition list (a term at the left margin, its definition indented
  below) becomes a Markdown ``def_list``.
* An attribute without a docstring takes the ``#:`` comment lines right above
  it, Sphinx's spelling of an attribute docstring, which griffe does not read.

Only docstrings are changed, and only in the documentation build.
"""

from __future__ import annotations

import re
import textwrap
from html import escape
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|exc|data|obj):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path ``target`` names when written in ``obj``'s docstring."""
    if target.startswith("channels_runtime"):
        return target
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            resolved = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError, ValueError):
            scope = scope.parent
            continue
        return f"{resolved}.{rest}" if rest else resolved
    # Not a member or an import of any enclosing scope: a stdlib name such as
    # contextvars.Context, or something outside the package. Keep it as written.
    return target


def _role_to_markdown(obj: griffe.Object, match: re.Match[str]) -> str:
    role, body = match.group(1), match["body"].strip()
    titled = _TITLED.match(body)
    if titled:
        title, target = titled["title"], titled["target"]
    else:
        short = body.startswith("~")
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if short else target
    target = target.removesuffix("()")
    if role in {"func", "meth"} and not title.endswith("()"):
        title += "()"
    identifier = _resolve(obj, target)
    return (
        f'<autoref identifier="{escape(identifier)}" optional>'
        f"<code>{escape(title)}</code></autoref>"
    )


_BULLET = re.compile(r"^(?:[*+-]|\d+[.)])\s")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _definition_lists(text: str) -> str:
    """RST definition lists (a term line, then its indented definition) -> ``def_list``.

    Only a term that starts a paragraph at the left margin and is followed by a
    line indented by four or more spaces counts, so bullet lists and hanging
    indents are left alone.
    """
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    after_definition = False
    while index < len(lines):
        line = lines[index]
        is_term = (
            line.strip()
            and _indent(line) == 0
            and not _BULLET.match(line)
            and (index == 0 or not lines[index - 1].strip() or after_definition)
            and index + 1 < len(lines)
            and lines[index + 1].strip()
            and _indent(lines[index + 1]) >= 4
        )
        if not is_term:
            out.append(line)
            index += 1
            after_definition = False
            continue
        if after_definition:
            out.append("")
        out.append(line)
        index += 1
        body: list[str] = []
        while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) >= 4):
            body.append(lines[index])
            index += 1
        trailing = 0
        while body and not body[-1].strip():
            body.pop()
            trailing += 1
        body = textwrap.dedent("\n".join(body)).split("\n")
        out.append(":   " + body[0])
        out.extend(("    " + rest) if rest.strip() else "" for rest in body[1:])
        out.extend([""] * trailing)
        after_definition = not trailing
    return "\n".join(out)


def _literal_blocks(text: str) -> str:
    """``para::`` + indented block  ->  ``para:`` + fenced code block."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.rstrip().endswith("::"):
            out.append(line)
            index += 1
            continue
        stripped = line.rstrip()[:-2].rstrip()
        base_indent = len(line) - len(line.lstrip())
        if stripped.strip():
            out.append(stripped + ":")
        index += 1
        block: list[str] = []
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > base_indent
        ):
            block.append(lines[index])
            index += 1
        while block and not block[-1].strip():
            block.pop()
        code = textwrap.dedent("\n".join(block)).strip("\n")
        pad = " " * base_indent
        out.append("")
        out.append(f"{pad}```python")
        out.extend(f"{pad}{code_line}" if code_line else "" for code_line in code.split("\n"))
        out.append(f"{pad}```")
        out.append("")
    return "\n".join(out)


def _comment_above(lines: list[str], lineno: int) -> tuple[list[str], int]:
    """The ``#:`` comment lines right above 1-based line ``lineno``, and where they start."""
    index = lineno - 2
    comment: list[str] = []
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return comment, index + 2


def _comment_docstring(attribute: griffe.Object, loader: griffe.GriffeLoader) -> None:
    """Give ``attribute`` the ``#:`` comment block above its assignment as docstring."""
    if attribute.docstring is not None or attribute.lineno is None:
        return
    try:
        lines = loader.lines_collection[attribute.filepath]  # type: ignore[index]
    except (KeyError, TypeError):
        return
    candidates = [attribute.lineno]
    parent = attribute.parent
    if parent is not None and parent.is_class and parent.lineno and parent.endlineno:
        # A class attribute also assigned in a method (``self.x = ...``) has that
        # later line as its lineno; the documented assignment is in the class body.
        assignment = re.compile(rf"^\s+{re.escape(attribute.name)}\s*[:=]")
        candidates[:0] = [
            number
            for number in range(parent.lineno + 1, parent.endlineno + 1)
            if assignment.match(lines[number - 1])
        ]
    for lineno in candidates:
        comment, start = _comment_above(lines, lineno)
        if comment:
            attribute.docstring = griffe.Docstring(
                "\n".join(comment), lineno=start, parent=attribute
            )
            return


class SphinxMarkup(griffe.Extension):
    """Rewrite Sphinx roles and ``::`` literal blocks in every docstring of a package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.is_attribute:
                _comment_docstring(obj, loader)
            docstring = obj.docstring
            if docstring is not None:
                value = _ROLE.sub(lambda match: _role_to_markdown(obj, match), docstring.value)
                docstring.value = _literal_blocks(_definition_lists(value))
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)  # type: ignore[arg-type]

        visit(pkg)
