"""Checks that Markdown names only things that exist: scripts, ``sslrun`` subcommands, config group entries and config
keys. Each ``*_problems(text)`` function returns one line per problem (empty: none), so a test can feed it any text.

What is read where:
- script paths (``scripts/<name>.py``): anywhere in the text;
- ``sslrun <subcommand>``: in inline code and in fenced blocks other than ``python``;
- ``group=entry`` and dotted ``key=value`` overrides: in fenced command blocks (info string empty, ``bash``, ``sh``,
  ``shell``). Transcripts (``console``, ``text``) may show a wrong key on purpose and are not read. Overrides that start
  with ``+`` or ``~``, ``hydra.*`` keys and values with ``${`` are skipped.
A key is checked against the config the line's ``sslrun <command>`` composes (with the group entries named on the same
line; for a ``-m`` list, every entry); a line without ``sslrun`` (a script) may use any command's keys. A key of a
group with no entry on the line may be a key of any entry of that group, or for ``method.*`` a field of any registered
method's ``Config``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOTS = (REPO / "sslrun" / "configs", REPO / "configs")
COMMAND_BLOCKS = {"", "bash", "sh", "shell"}
CONFIG_NAMES = ("pretrain", "finetune", "export")

SCRIPT = re.compile(r"(?<![\w/.-])scripts/[\w/.-]+?\.py(?![\w])")
SUBCOMMAND = re.compile(r"(?<![\w./-])sslrun[ \t]+([a-z][\w-]*)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
OVERRIDE = re.compile(r"([A-Za-z_]\w*(?:\.\w+)*)=(.*)")
FENCE = re.compile(r"^\s*```(.*)$")


def doc_files(repo: Path = REPO) -> list[Path]:
    """README.md, CONTRIBUTING.md when there is one, and docs/*.md."""
    files = [repo / "README.md", repo / "CONTRIBUTING.md", *sorted((repo / "docs").glob("*.md"))]
    return [f for f in files if f.is_file()]


def fenced_blocks(text: str) -> tuple[list[tuple[str, list[str]]], str]:
    """([(info string, lines)] of the fenced blocks, the text outside them)."""
    blocks: list[tuple[str, list[str]]] = []
    outside: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and current is None:
            current = []
            blocks.append((fence.group(1).strip().lower(), current))
        elif fence:
            current = None
        elif current is not None:
            current.append(line)
        else:
            outside.append(line)
    return blocks, "\n".join(outside)


def command_lines(text: str) -> list[str]:
    """The logical lines of the command blocks: continuations joined, comments dropped."""
    lines: list[str] = []
    for info, block in fenced_blocks(text)[0]:
        if info not in COMMAND_BLOCKS:
            continue
        pending = ""
        for raw in block:
            line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            lines.append((pending + line).strip())
            pending = ""
        if pending:
            lines.append(pending.strip())
    return [line for line in lines if line]


def config_groups() -> dict[str, list[Path]]:
    """Config group name -> the folders that hold its entries (the package's tree and a top-level configs/)."""
    groups: dict[str, list[Path]] = {}
    for root in CONFIG_ROOTS:
        if root.is_dir():
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
                groups.setdefault(folder.name, []).append(folder)
    return groups


def group_entries(group: str) -> list[str]:
    return sorted({p.stem for folder in config_groups().get(group, []) for p in folder.glob("*.yaml")})


def split_values(value: str) -> list[str]:
    """A sweep list ``a,b`` -> [a, b]; a list value ``[a,b]`` stays one value."""
    return [value] if value.startswith("[") else value.split(",")


def list_entries(value: str) -> list[str]:
    """The entry names in a group value: ``a``, ``a,b`` or ``[a,b]``."""
    return [v.strip() for v in value.strip("[]").split(",") if v.strip()]


def overrides_of(line: str) -> list[tuple[str, str, str]]:
    """(name, value, token) of the overrides on a line that the checks read."""
    found = []
    for token in line.split():
        match = OVERRIDE.fullmatch(token)
        if not match or token[0] in "+~" or "${" in token:
            continue
        name, value = match.groups()
        if name.split(".")[0] == "hydra":
            continue
        found.append((name, value, token))
    return found


def line_commands(line: str) -> tuple[str, ...]:
    """The configs a line's overrides belong to: its ``sslrun <command>``'s, or all of them for a script's line."""
    match = SUBCOMMAND.search(line)
    if match and match.group(1) in CONFIG_NAMES:
        return (match.group(1),)
    if match:
        return ()
    return CONFIG_NAMES


@functools.cache
def composed(config_name: str, overrides: tuple[str, ...]) -> dict | None:
    """The composed config as plain containers (interpolations unresolved), or None when it does not compose."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("sslrun.configs", version_base="1.3"):
            return OmegaConf.to_container(compose(config_name, overrides=list(overrides)), resolve=False)
    except Exception:
        return None
    finally:
        GlobalHydra.instance().clear()


@functools.cache
def method_fields() -> dict[str, set[str]]:
    """Method name -> the fields of its ``Config``, for every registered method."""
    from sslrun.methods import METHODS

    return {name: {f.name for f in dataclasses.fields(METHODS.get(name).Config)} for name in METHODS.names()}


def has_key(config: dict | None, key: str) -> bool:
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def key_in_config(config_name: str, key: str, overrides: tuple[str, ...], entry: str | None) -> bool:
    """``key`` in ``config_name`` composed with ``overrides``; ``entry``: the entry of the key's group on the line."""
    group, _, rest = key.partition(".")
    if has_key(composed(config_name, overrides), key):
        return True
    if group == "method" and "." not in rest:
        fields = method_fields()
        if entry is not None:
            return rest in fields.get(entry, set())
        if any(rest in names for names in fields.values()):
            return True
    if entry is None and group in config_groups():
        others = tuple(o for o in overrides if not o.startswith(f"{group}="))
        return any(has_key(composed(config_name, (*others, f"{group}={e}")), key) for e in group_entries(group))
    return False


def script_problems(text: str, repo: Path = REPO) -> list[str]:
    return [f"{path}: no such script" for path in sorted(set(SCRIPT.findall(text))) if not (repo / path).is_file()]


def subcommand_problems(text: str) -> list[str]:
    from sslrun.cli import HYDRA_COMMANDS, PLAIN_COMMANDS

    valid = {*HYDRA_COMMANDS, *PLAIN_COMMANDS}
    blocks, outside = fenced_blocks(text)
    code = INLINE_CODE.findall(outside) + [line for info, lines in blocks if info != "python" for line in lines]
    named = {m.group(1) for snippet in code for m in SUBCOMMAND.finditer(snippet)}
    return [f"sslrun {name}: not a subcommand (valid: {', '.join(sorted(valid))})" for name in sorted(named - valid)]


def group_entry_problems(text: str) -> list[str]:
    groups = config_groups()
    problems = []
    for line in command_lines(text):
        for name, value, _ in overrides_of(line):
            if name not in groups:
                continue
            for entry in list_entries(value):
                if "<" not in entry and entry not in group_entries(name):
                    problems.append(f"{name}={entry}: no {name}/{entry}.yaml in any config tree (line: {line})")
    return problems


def key_problems(text: str) -> list[str]:
    groups = config_groups()
    problems = []
    for line in command_lines(text):
        found = overrides_of(line)
        named = {name: split_values(value) for name, value, _ in found if name in groups}
        for name, _, _ in found:
            if "." not in name:
                continue
            group = name.split(".")[0]
            commands = line_commands(line)
            combos = [dict(zip(named, values, strict=True)) for values in itertools.product(*named.values())] or [{}]
            ok = bool(commands) and all(
                any(
                    key_in_config(c, name, tuple(f"{g}={v}" for g, v in combo.items()), combo.get(group))
                    for c in commands
                )
                for combo in combos
            )
            if not ok:
                where = "/".join(commands) or "no"
                problems.append(f"{name}: no such key in the {where} config (line: {line})")
    return problems


def problems(text: str, repo: Path = REPO) -> list[str]:
    """Every problem the checks find in one Markdown text."""
    return script_problems(text, repo) + subcommand_problems(text) + group_entry_problems(text) + key_problems(text)
