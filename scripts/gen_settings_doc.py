"""Write the settings reference of docs/configuration.md from the settings model (`make docs`).

    .venv/bin/python scripts/gen_settings_doc.py           # rewrite the generated section
    .venv/bin/python scripts/gen_settings_doc.py --check   # exit 1 if it is out of date

One row per field of ``sidecar_injector.runtime.settings.Settings``: its environment variable, the
flags the command line really has for it (read from the CLI's own parser, so the flag
column cannot drift from ``--help``), the commands that take them, its type and bounds, its
default and its description. Only the text between the two markers is replaced; the rest of
the page is written by hand. tests/test_docs.py fails when the committed page differs from
what this prints.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

from sidecar_injector.cli.parser import build_parser
from sidecar_injector.runtime.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED SETTINGS (make docs writes this table from app/sidecar_injector/runtime/settings.py) -->"
END = "<!-- END GENERATED SETTINGS -->"


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command's parser, keyed by its words (``("profiles", "list")``)."""
    found = {path: parser} if path else {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, (*path, name)))
    return found


def _flags() -> dict[str, tuple[list[str], list[str]]]:
    """setting name -> (its option strings, the commands that take it)."""
    flags: dict[str, tuple[list[str], list[str]]] = {}
    for words, parser in _commands(build_parser()).items():
        for action in parser._actions:
            # a flag made from the setting (cli._setting_flag) names its variable in its help;
            # other options may share a dest (`certs generate --namespace` is the Service's)
            if action.option_strings and f"[env {ENV_PREFIX}{action.dest.upper()}]" in (action.help or ""):
                options, commands = flags.setdefault(action.dest, (list(action.option_strings), []))
                if options != list(action.option_strings):
                    raise SystemExit(f"setting {action.dest}: different flags in {' '.join(words)}")
                commands.append(" ".join(words))
    return flags


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _type(field: FieldInfo) -> str:
    annotation = _base_type(field.annotation)
    if annotation is bool:
        return "boolean"
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return "list (comma-separated)"
    name = {int: "integer", float: "number", str: "string", Path: "path"}.get(annotation)
    if name is None:
        raise SystemExit(f"no documented type for {annotation!r}: teach scripts/gen_settings_doc.py")
    bounds = {type(m): m for m in field.metadata}
    shortest, longest = bounds.get(annotated_types.MinLen), bounds.get(annotated_types.MaxLen)
    if shortest is not None or longest is not None:
        return f"{name}, {shortest.min_length if shortest else 0}–{longest.max_length if longest else '∞'} characters"
    low, high = bounds.get(annotated_types.Ge), bounds.get(annotated_types.Le)
    if low is not None and high is not None:
        return f"{name}, {_number(low.ge)}–{_number(high.le)}"
    parts = []
    if low is not None:
        parts.append(f"≥ {_number(low.ge)}")
    if (gt := bounds.get(annotated_types.Gt)) is not None:
        parts.append(f"> {_number(gt.gt)}")
    if high is not None:
        parts.append(f"≤ {_number(high.le)}")
    return ", ".join([name, *parts])


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{','.join(value)}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    flags = _flags()
    rows = [
        "| environment variable | flag | commands | type | default | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        options, commands = flags.get(name, ([], []))
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{ENV_PREFIX}{name.upper()}`",
                    " / ".join(f"`{option}`" for option in options) or "—",
                    ", ".join(commands) or "—",
                    _type(field),
                    _default(field),
                    _cell(field.description or ""),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def render(page: str) -> str:
    """``page`` with the text between the markers replaced by the current table."""
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise SystemExit(f"{DOC.relative_to(ROOT)}: expected one {BEGIN!r} ... {END!r} section")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date, change nothing")
    args = parser.parse_args(argv)
    page = DOC.read_text(encoding="utf-8")
    wanted = render(page)
    if wanted == page:
        print(f"{DOC.relative_to(ROOT)}: up to date")
        return 0
    if args.check:
        print(f"{DOC.relative_to(ROOT)}: the settings reference is out of date; run `make docs`", file=sys.stderr)
        return 1
    DOC.write_text(wanted, encoding="utf-8")
    print(f"{DOC.relative_to(ROOT)}: settings reference rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
