"""Generate the key reference of ``docs/configuration.md`` from ``conf/settings.py`` and the
section modules it gathers (``conf/sections/``).

Field docstrings are not kept at run time, so they are read from the source with ``ast``;
types, defaults and ranges come from the dataclasses themselves. The generated text sits
between two marker comments in the doc; ``test_docs.py`` fails when it is stale.

Regenerate after changing a section (or settings.py)::

    .venv/bin/python -m tests.conf.docgen
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from conf.load import show
from conf.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_PY = ROOT / "conf" / "settings.py"
SECTIONS_DIR = ROOT / "conf" / "sections"
DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED: python -m tests.conf.docgen -->"
END = "<!-- END GENERATED -->"
NOT_KEYS = {("Settings", "source")}


def sources() -> list[Path]:
    """The files the settings classes are written in: settings.py and every section module."""
    return [SETTINGS_PY, *sorted(SECTIONS_DIR.glob("*.py"))]


def docstrings(paths: list[Path] | None = None) -> dict[str, tuple[str, dict[str, str]]]:
    """``{class: (class docstring, {field: field docstring})}`` for every class in ``paths``
    (default: ``sources()``); class names are unique across them."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    nodes = [node for path in (paths or sources())
             for node in ast.parse(path.read_text(encoding="utf-8")).body]  # fmt: skip
    for node in nodes:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        body: list[ast.stmt | None] = [*node.body, None]
        for stmt, nxt in itertools.pairwise(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                doc = ""
                if (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    doc = nxt.value.value
                fields[stmt.target.id] = doc
        assert node.name not in out, f"two settings classes named {node.name}"
        out[node.name] = (ast.get_docstring(node) or "", fields)
    return out


def _md(text: str) -> str:
    """A docstring as one Markdown line: RST ``code`` to `code`, whitespace collapsed."""
    return re.sub(r"\s+", " ", text.replace("``", "`")).strip().replace("|", "\\|")


def _type(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " \\| ".join(f'`"{c}"`' for c in get_args(hint))
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if dataclasses.is_dataclass(item):
            return "array of tables"
        return f"array of {_type(item)}s"
    if dataclasses.is_dataclass(hint):
        return "table"
    if get_origin(hint) in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in get_args(hint))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}[hint]


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value: object = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value) or (
        isinstance(value, list) and value and dataclasses.is_dataclass(value[0])
    ):
        return "see below"
    return f"`{show(value)}`"


def _range(f: dataclasses.Field[Any]) -> str:
    lo: float | None = f.metadata.get("min")
    hi: float | None = f.metadata.get("max")
    if lo is None or hi is None:
        return ""
    return f"{_num(lo)} – {_num(hi)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def sections() -> list[tuple[str, type, str]]:
    """``(TOML heading, dataclass, Settings field)`` for each section, in Settings order."""
    out = []
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        if ("Settings", f.name) in NOT_KEYS:
            continue
        hint = hints[f.name]
        if get_origin(hint) is list:
            out.append((f"[[{f.name}]]", get_args(hint)[0], f.name))
        else:
            out.append((f"[{f.name}]", hint, f.name))
    return out


def nested(cls: type, name: str) -> list[tuple[str, type, str]]:
    """``(TOML heading, dataclass, key)`` for each table nested in section ``cls``."""
    out: list[tuple[str, type, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        listed = get_origin(hint) is list
        sub = get_args(hint)[0] if listed else hint
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            key = f"{name}.{f.name}"
            out.append((f"[[{key}]]" if listed else f"[{key}]", sub, key))
    return out


def render() -> str:
    """The generated reference, markers included."""
    docs = docstrings()
    lines = [BEGIN, "", "## Sections", "", "| Section | Meaning |", "|---|---|"]
    for heading, cls, name in sections():
        lines.append(f"| [`{heading}`](#{name}) | {_md(docs['Settings'][1][name])} |")
    for heading, cls, name in sections():
        class_doc, field_docs = docs[cls.__name__]
        # class docstrings open with their heading ("``[tcp]``: limits ..."), said by the title here
        intro = re.sub(r"^`\[\[?\w+\]\]?`: ", "", _md(class_doc))
        lines += [
            "",
            f'<a id="{name}"></a>',
            f"## `{heading}`",
            "",
            intro[:1].upper() + intro[1:],
            "",
        ]
        lines += _keys_table(cls, field_docs)
        # tables nested in this one (``[[route.header]]``): one more table each, with its keys
        for sub_heading, sub, key in nested(cls, name):
            sub_doc, sub_fields = docs[sub.__name__]
            intro = re.sub(r"^`\[\[?[\w.]+\]\]?`: ", "", _md(sub_doc))
            lines += ["", f'<a id="{key}"></a>', f"### `{sub_heading}`", "",
                      intro[:1].upper() + intro[1:], ""]  # fmt: skip
            lines += _keys_table(sub, sub_fields)
    lines += ["", END]
    return "\n".join(lines)


def _keys_table(cls: type, field_docs: dict[str, str]) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = ["| Key | Type | Default | Range | Meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        lines.append(
            f"| `{f.name}` | {_type(hints[f.name])} | {_default(f)} | {_range(f)} | {_md(field_docs[f.name])} |"
        )
    return lines


def splice(doc: str, generated: str) -> str:
    """``doc`` with the text between the markers replaced by ``generated``."""
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    return doc[:start] + generated + doc[end:]


def main() -> None:
    DOC.write_text(splice(DOC.read_text(encoding="utf-8"), render()), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
