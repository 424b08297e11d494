"""All terminal output: the composed config as a tree, result tables, and one-line user errors."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

console = Console()
err_console = Console(stderr=True)


def print_config(cfg: DictConfig, title: str) -> None:
    tree = Tree(f"[bold]{title}[/bold]")
    _add_nodes(tree, cfg)
    console.print(tree)


def _add_nodes(tree: Tree, node: DictConfig | ListConfig) -> None:
    for key, value in node.items():
        if isinstance(value, DictConfig):
            _add_nodes(tree.add(f"[bold cyan]{key}[/bold cyan]"), value)
        else:
            shown = OmegaConf.to_yaml(value).strip() if isinstance(value, ListConfig) else repr(value)
            tree.add(f"{key}: [green]{shown}[/green]")


def print_metrics(metrics: Mapping[str, float | int | str], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def print_table(title: str, columns: list[str], rows: Iterable[list[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_rows(title: str, rows: Iterable[tuple[str, str, str]]) -> None:
    print_table(title, ["kind", "name", "description"], rows)


last_failure: str | None = None  # the message of the latest ``fail`` (sslrun.api raises it)


def fail(message: str, status: int = 2, label: str = "error") -> None:
    """Print a message on one line and exit with ``status`` (no traceback): 2 for a user error."""
    global last_failure
    last_failure = message
    err_console.print(f"[bold red]{label}:[/bold red] {message}", highlight=False, soft_wrap=True)
    sys.exit(status)


HYDRA_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:+~@")


def override(key: str, value: object) -> str:
    """``key=value`` as Hydra's override parser reads it: a value with spaces, non-ASCII or other special characters
    in Hydra's single quotes."""
    text = str(value)
    if text and set(text) <= HYDRA_PLAIN:
        return f"{key}={text}"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{escaped}'"


def command_line(*words: str) -> str:
    """The words as one line a POSIX shell reads back word for word (for the user to paste)."""
    return " ".join(shlex.quote(w) for w in words)


def print_next(commands: Iterable[str]) -> None:
    """The commands that usually come next, shown at the end of a run."""
    console.print("[bold]next:[/bold]")
    for command in commands:
        console.print(f"  {command}", highlight=False, soft_wrap=True)
