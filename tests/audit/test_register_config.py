"""``[register]`` in veilpix.toml: what the transfer register says about the controller. Good
values, unknown keys, wrong types, and the examples in the starter file and the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from veilpix._config import Config, load_config
from veilpix._config_review import RegisterConfig, register_table
from veilpix._errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FULL = '''
[register]
controller = "Example Shop GmbH"
address = """Hauptstrasse 1
10115 Berlin"""
contact = "  privacy@shop.example  "
representative = "not needed: established in the EU"
dpo = "Dr. Jane Doe, dpo@shop.example"
data_subjects = ["customers", "employees", "customers"]
security_measures = ["disk encryption", "SSO"]

[register.retention]
"product photos" = "6 months after contract end"
default = "180d"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "veilpix.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_field_is_read(tmp_path: Path) -> None:
    register = load_config(write(tmp_path, FULL)).register
    assert register == RegisterConfig(
        controller="Example Shop GmbH",
        address="Hauptstrasse 1\n10115 Berlin",
        contact="privacy@shop.example",  # stripped
        representative="not needed: established in the EU",
        dpo="Dr. Jane Doe, dpo@shop.example",
        data_subjects=("customers", "employees"),  # a repeat is dropped, the order kept
        retention={"product photos": "6 months after contract end", "default": "180d"},
        security_measures=("disk encryption", "SSO"),
    )
    assert register.unset == ()
    assert register.default_retention == "180d"
    assert register.retention_for("product photos") == "6 months after contract end"
    assert register.retention_for("support chat") == "180d"


def test_nothing_set_by_default(tmp_path: Path) -> None:
    assert Config().register == RegisterConfig()
    assert load_config(write(tmp_path, "[log]\n")).register == RegisterConfig()
    empty = load_config(write(tmp_path, "[register]\n")).register
    assert empty.unset == (
        "controller",
        "address",
        "contact",
        "representative",
        "dpo",
        "data_subjects",
        "retention",
        "security_measures",
    )
    assert empty.retention_for("anything") is None


def test_star_is_the_default_period() -> None:
    register = register_table({"retention": {"*": "1y", "chat": "30d"}})
    assert register.retention_for("chat") == "30d" and register.retention_for("x") == "1y"
    assert register.unset == (
        "controller",
        "address",
        "contact",
        "representative",
        "dpo",
        "data_subjects",
        "security_measures",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('controler = "x"', "unknown setting register.controler"),
        ("dpo = true", "register.dpo must be a str, not True"),
        ("controller = 1", "register.controller must be a str, not 1"),
        ('controller = "  "', "register.controller must be a non-empty text"),
        ('data_subjects = "customers"', "register.data_subjects must be a list"),
        ("data_subjects = [1]", "register.data_subjects must be a list of texts"),
        ('data_subjects = ["ok", ""]', "register.data_subjects[1] must be a non-empty text"),
        ('security_measures = "TLS"', "register.security_measures must be a list"),
        ('retention = "180d"', "register.retention must be a table of purpose = period"),
        ("retention = { chat = 30 }", "register.retention.chat must be a period as text"),
        ('retention = { chat = "" }', "register.retention.chat must be a non-empty text"),
        (
            'retention = { "*" = "1y", default = "2y" }',
            'register.retention sets the default period twice ("*" and "default")',
        ),
        ('retention = { "" = "1y" }', "register.retention has an empty purpose"),
        (f'address = "{"x" * 1001}"', "register.address is 1001 characters long"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, f"[register]\n{text}\n"))


def test_register_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("veilpix.toml.register must be a dict")):
        load_config(write(tmp_path, 'register = "Example Shop"\n'))
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, '[register]\nowner = "x"\n'))
    assert caught.value.hint is not None and "controller" in caught.value.hint


def _uncommented(text: str, start: str) -> str:
    """The commented-out block of ``text`` from the line ``start`` to the next blank line
    (a lone ``#`` line continues it), without its comment marks."""
    lines = text.splitlines()
    i = lines.index(start)
    out = []
    for line in lines[i:]:
        if not line.strip():
            break
        out.append(line.removeprefix("#").removeprefix(" "))
    return "\n".join(out) + "\n"


def test_the_starter_files_register_example_is_valid(tmp_path: Path) -> None:
    from veilpix.cli._config import starter  # the text `veilpix config init` writes

    text = starter()
    first = next(line for line in text.splitlines() if line.startswith("# [register]"))
    block = _uncommented(text, first)
    register = load_config(write(tmp_path, block)).register
    assert register.unset == () and register.default_retention == "180d"


def test_the_docs_register_example_is_valid(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
    section = docs.split("### Register fields", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    register = load_config(write(tmp_path, block)).register
    assert register.unset == () and register.retention_for("support chat") == "30d"
    assert register.retention_for("anything else") == "180d"
