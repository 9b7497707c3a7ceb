"""docs/configuration.md cannot drift from conf/settings.py and conf/sections/: every key is
documented as the code says."""

from __future__ import annotations

import dataclasses
import importlib
import re
import tomllib

import pytest

from conf import settings as settings_module
from conf.load import MAX_RUN_DIR_BYTES, ConfigError, from_dict
from tests.conf import docgen

DOC_TEXT = docgen.DOC.read_text(encoding="utf-8")


def settings_classes() -> list[type]:
    """Every dataclass settings.py defines or gathers from a section module."""
    return [
        obj
        for obj in vars(settings_module).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__.split(".")[:2] in (["conf", "settings"], ["conf", "sections"])
    ]


def test_every_section_class_is_gathered() -> None:
    """Each dataclass of a section module is re-exported by settings.py (and so documented)."""
    gathered = set(settings_classes())
    for path in docgen.SECTIONS_DIR.glob("*.py"):
        module = importlib.import_module(f"conf.sections.{path.stem}")
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                assert obj in gathered, f"{obj.__name__} of {path.name} not in conf/settings.py"


def test_every_field_has_a_docstring() -> None:
    """Each settings class and each of its fields carries a docstring in its module."""
    docs = docgen.docstrings()
    for cls in settings_classes():
        class_doc, field_docs = docs[cls.__name__]
        assert class_doc, f"{cls.__name__} has no docstring"
        for f in dataclasses.fields(cls):
            assert field_docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"


def test_every_section_is_documented() -> None:
    """Every class reachable from Settings is a section of the generated reference."""
    documented = {cls for _, cls, _ in docgen.sections()}
    documented |= {sub for _, cls, name in docgen.sections() for _, sub, _ in docgen.nested(cls, name)}
    assert documented == {c for c in settings_classes() if c.__name__ != "Settings"}


@pytest.mark.parametrize(("heading", "cls", "name"), docgen.sections(), ids=lambda x: str(x))
def test_every_key_is_in_its_section(heading: str, cls: type, name: str) -> None:
    """Each key appears as a table row under its own section heading in the doc."""
    start = DOC_TEXT.index(f"## `{heading}`")
    following = DOC_TEXT.find("\n## ", start + 1)
    section = DOC_TEXT[start : following if following != -1 else len(DOC_TEXT)]
    for f in dataclasses.fields(cls):
        assert re.search(rf"^\| `{f.name}` \|", section, re.MULTILINE), (
            f"{heading} {f.name} missing from the doc"
        )


def test_generated_reference_is_current() -> None:
    """The reference between the markers is exactly what docgen renders now.

    When this fails after a change to conf/settings.py, run: .venv/bin/python -m tests.conf.docgen
    """
    assert docgen.splice(DOC_TEXT, docgen.render()) == DOC_TEXT


def test_run_dir_limit_is_stated() -> None:
    """The run_dir docstring states the limit the loader enforces."""
    assert f"at most {MAX_RUN_DIR_BYTES} bytes" in docgen.docstrings()["Node"][1]["run_dir"]


def test_toml_examples_load() -> None:
    """Every ```toml block in the doc is a valid configuration."""
    blocks = re.findall(r"```toml\n(.*?)```", DOC_TEXT, re.DOTALL)
    assert blocks
    for block in blocks:
        from_dict(tomllib.loads(block), "docs/configuration.md")


#: the doc's table of example messages, and a configuration that produces each
MESSAGES = [
    ({"node": {"nmae": "x"}}, "node.nmae: expected a key of [node] (name, run_dir, run_group), found an unknown key (did you mean name?)"),
    ({"listen": [{"transport": "udp", "port": "5060"}]}, 'listen[0].port: expected an integer, found "5060" (a string)'),
    ({"tcp": {"max_body_bytes": -1}}, "tcp.max_body_bytes: expected a number from 0 to 16777216, found -1"),
    ({"log": {"level": "INFO"}}, 'log.level: expected one of "debug", "info", "warning", "error", found "INFO"'),
    ({"listen": {"transport": "udp"}}, "listen: expected an array of tables ([[listen]]), found a single table ([listen])"),
    ({"listen": [{}]}, 'listen[0].transport: expected one of "udp", "tcp", "tls" (this key is required), found nothing'),
    ({"route": [{"name": "r"}]}, "route[0].to: expected an action: the name of a [[destination_set]] (none is defined), to_request_uri = true or reject (a status), found nothing"),
    (
        {"destination_set": [{"name": "uas", "destinations": ["sip:127.0.0.1"]}], "route": [{"name": "r", "to": "usa"}]},
        'route[0].to: expected the name of a [[destination_set]] (uas), found "usa"',
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), MESSAGES)
def test_example_messages_are_real(data: dict[str, object], message: str) -> None:
    """The messages the doc shows are the ones the loader gives."""
    assert f"`{message}`" in DOC_TEXT
    with pytest.raises(ConfigError) as info:
        from_dict(data, "f.toml")
    assert str(info.value) == f"f.toml: {message}"
