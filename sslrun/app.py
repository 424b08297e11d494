"""Runs one sub-command as a Hydra app. Before Hydra starts, every override (every combination under ``-m``)
is composed and validated, so a typo or an unknown name ends in one clear line and exit status 2."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import hydra
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sslrun import console, launch
from sslrun.cluster import check_nodes, check_slurm_launcher, is_first_process, rank_suffix
from sslrun.config import COMMAND_SCHEMAS, key_rows, shared_schema, unknown_key_message, validate
from sslrun.errors import (
    FAILED,
    Diverged,
    Interrupted,
    MachineFault,
    Preempted,
    RunStopped,
    UserError,
    machine_fault,
)
from sslrun.lock import run_lock
from sslrun.outputs import run_dir
from sslrun.registry import unknown_name_message

CONFIG_MODULE = "sslrun.configs"
# The config's own checks raise UserError; library code (backbones, data, losses, methods) ValueError or TypeError.
USER_ERRORS = (UserError, ValueError, TypeError)


def one_line(err: Exception) -> str:
    """A user error's message on one line; with ``HYDRA_FULL_ERROR=1`` (Hydra's switch) the error is raised again, so
    its traceback shows."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    return " ".join(str(err).split()) or type(err).__name__


def hydra_arguments() -> argparse.ArgumentParser:
    """The command line ``hydra.main`` accepts (its flags and the overrides), parsed here only to find the overrides
    and whether Hydra will print help or info instead of running; ``hydra.main`` parses it again itself."""
    parser = argparse.ArgumentParser(add_help=False)
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--resolve",), ("--run", "-r")):
        parser.add_argument(*flags, action="store_true")
    for flags in (("--multirun", "-m"), ("--shell-completion", "-sc")):
        parser.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn")):
        parser.add_argument(*flags)
    for flags in (("--config-dir", "-cd"), ("--experimental-rerun",)):
        parser.add_argument(*flags)
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("overrides", nargs="*")
    return parser


def sweep_combinations(overrides: list) -> list[list[str]]:
    """Every job of a ``-m`` sweep as its list of ``key=value`` overrides: the cartesian product of the sweep
    overrides' values, in the order Hydra's basic sweeper runs them."""
    choices = []
    for item in overrides:
        key = item.get_key_element()
        values = list(item.sweep_string_iterator()) if item.is_sweep_override() else [item.get_value_element_as_str()]
        choices.append([f"{key}={value}" for value in values])
    return [list(combo) for combo in itertools.product(*choices)]


SWEPT_KEYS = "SSLRUN_SWEPT_KEYS"
DIRNAME_MAX = 60


def swept_overrides(overrides: list[str]) -> list[str]:
    """The overrides of the keys a ``-m`` sweep varies (all but ``hydra.*`` when that is not known)."""
    swept = {k for k in os.environ.get(SWEPT_KEYS, "").split(",") if k}
    kept = []
    for item in map(str, overrides):
        key = item.partition("=")[0]
        if not key.startswith("hydra.") and (not swept or key.lstrip("+~") in swept):
            kept.append(item)
    return kept


def job_dirname(overrides: list[str]) -> str:
    """A sweep job's subdir name after its number: the overrides of the keys the sweep varies (all of them when
    that is not known), a path value reduced to its last component, and past DIRNAME_MAX characters a short hash.
    Used as ``${sslrun_dirname:${hydra.overrides.task}}`` in the primary configs."""
    items = []
    for item in swept_overrides(overrides):
        key, _, value = item.partition("=")
        items.append(f"{key}={Path(value).name if '/' in value else value}")
    name = ",".join(items)
    if len(name) > DIRNAME_MAX:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: DIRNAME_MAX - 9]}~{digest}"
    return name


OmegaConf.register_new_resolver("sslrun_dirname", job_dirname, replace=True)


def hydra_subdir(output_dir: str, resume: str) -> str | None:
    """Where Hydra writes its own files of this job: ``.hydra``, unless a run there already has them and this job
    continues it (a resume, or a finished run met again): then ``.hydra/rerun-<time>``, so what the run was is kept.
    Used as ``hydra.output_subdir`` in the primary configs."""
    if not is_first_process():  # a later node or srun task of a multi-process job: the first one writes them
        return None
    if str(resume) != "overwrite" and (Path(output_dir) / ".hydra" / "config.yaml").is_file():
        return f".hydra/rerun-{time.strftime('%Y%m%d-%H%M%S')}"
    return ".hydra"


OmegaConf.register_new_resolver("sslrun_hydra_subdir", hydra_subdir, replace=True)
# ``hydra.job.name``, hence the log file's name: ``pretrain.log`` for a job's first process, ``pretrain.rank1.log``
# for a later node's or task's (one run dir per job, whatever the rank count)
OmegaConf.register_new_resolver("sslrun_job_name", lambda name: f"{name}{rank_suffix()}", replace=True)

# The primary configs search ./configs (experiment/, sweep/ files of the working directory); most working directories
# have none, which Hydra would announce on every run.
warnings.filterwarnings("ignore", message=r"provider=hydra.searchpath in main, path=configs is not available")
# sslrun's hydra/launcher/submitit_*.yaml are checked against the submitit plugin's schema of the same name (its keys
# and types), which Hydra calls deprecated on every run.
warnings.filterwarnings("ignore", message=r"(?s).*hydra/launcher/submitit_\w+' is validated against ConfigStore schema")


def run_command(name: str, command: ModuleType | str, argv: list[str]) -> list[Job]:
    """``command`` (a module, or its name: imported only when the command runs or is checked, so ``--help`` answers
    without importing torch) provides ``schema(cfg) -> dataclass instance`` and ``run(cfg) -> dict``, and may provide
    ``check(cfg)`` (checks across keys); ``run`` shows the config with ``outputs.record_config`` once its ``auto``
    values are resolved."""
    args, _ = hydra_arguments().parse_known_args(argv)
    if not (args.help or args.hydra_help or args.version or args.info or args.shell_completion):
        try:
            command = precheck(name, command, args.overrides, multirun=args.multirun)
        except USER_ERRORS as err:
            console.fail(one_line(err))

    jobs: list[Job] = []

    def task(cfg: DictConfig) -> Job:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        job = Job.current()  # ``command`` is a module by now: Hydra runs a job only past the pre-flight above
        try:
            with run_lock(run_dir()):
                job.metrics = command.run(checked(cfg, command)) or {}
        except USER_ERRORS as err:
            job.failed(2, "error", one_line(err))
        except Preempted as err:  # requeued (this exits), or nothing to requeue with: stopped as by SIGTERM
            err.preemption.requeue(str(err))
            console.fail(str(err), err.status, "stopped")
        except Interrupted as err:  # a signal stops the whole sweep: the cluster or the user wants the machine back
            console.fail(str(err), err.status, "stopped")
        except RunStopped as err:
            job.failed(err.status, "error" if isinstance(err, Diverged | MachineFault) else "stopped", str(err))
        except OSError as err:  # the disk: full, read-only, vanished (other OSErrors are bugs: their traceback)
            fault = machine_fault(err)
            if fault is None:
                raise
            job.failed(fault.status, "error", str(fault))
        except SIGTERMException:  # Lightning's own stop, at an epoch end (after that epoch's checkpoint)
            console.fail("stopped by SIGTERM; run the same command again to continue (resume=auto)", 143, "stopped")
        jobs.append(job)
        if not job.in_sweep:
            if job.status:
                console.fail(job.message, job.status, job.label)
            return job
        if job.status:  # the sweep goes on; the failure is kept in the job's dir and summed up at the end
            console.err_console.print(f"[bold red]job {job.number} failed ({job.label}):[/bold red] {job.message}")
            job.record()
        return job  # a launcher of other processes (submitit) hands it back to this one's REMOTE_JOBS

    sys.argv = [str(launch.script(name)), *argv]
    try:
        hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=name, version_base="1.3")(task)()
    except SystemExit as stop:
        if args.help and not stop.code:  # Hydra's help lists the groups; the keys, their defaults and rules follow
            print_keys(name)
        raise
    jobs += REMOTE_JOBS
    if len(jobs) > 1 or (jobs and jobs[0].in_sweep):
        summarise_sweep(sorted(jobs, key=lambda job: job.number))
    return jobs


def print_keys(name: str) -> None:
    """Every key of the command with its schema default and what its value must be (the values this command starts
    from are in the config Hydra's help prints above)."""
    rows = key_rows(shared_schema(COMMAND_SCHEMAS[name]))
    width = max(len(key) for key, _, _ in rows) + 2
    print("== Keys (schema default; rule) ==\n")
    for key, default, what in rows:
        print(f"{key:<{width}}{default + '; ' if default else ''}{what}")


# The jobs a launcher ran in other processes (hydra_plugins/sslrun_submitit), as they came back.
REMOTE_JOBS: list[Job] = []


@dataclass
class Job:
    """One run of a command: its place in a ``-m`` sweep, its run dir, and how it ended."""

    number: int
    overrides: list[str]
    path: Path
    in_sweep: bool
    metrics: dict = field(default_factory=dict)
    status: int = 0
    label: str = ""
    message: str = ""

    @classmethod
    def current(cls) -> Job:
        hydra_cfg = HydraConfig.get()
        number = hydra_cfg.job.get("num", 0) or 0
        return cls(number, list(hydra_cfg.overrides.task), run_dir(), hydra_cfg.mode == RunMode.MULTIRUN)

    def failed(self, status: int, label: str, message: str) -> None:
        self.status, self.label, self.message = status, label, message

    def record(self) -> None:
        """``failed.json`` in the run dir: ``sslrun report`` lists the run with it."""
        record = {"status": self.status, "label": self.label, "message": self.message, "overrides": self.overrides}
        try:
            (self.path / FAILED).write_text(json.dumps(record, indent=2) + "\n")
        except OSError:
            pass  # the run dir itself may be what failed (a full or vanished disk): the summary still says it


SUMMARY_METRICS = ("knn_top1", "linear_top1", "top1", "train_loss")


def summarise_sweep(jobs: list[Job]) -> None:
    """One table of the sweep's jobs (overrides, status, key metrics); a failed job makes the exit status 1."""
    metrics = [k for k in SUMMARY_METRICS if any(isinstance(job.metrics.get(k), float) for job in jobs)]
    rows = []
    for job in jobs:
        status = "ok" if not job.status else f"{job.label} ({job.status}): {job.message}"
        values = [f"{job.metrics[k]:.4f}" if isinstance(job.metrics.get(k), float) else "" for k in metrics]
        rows.append([str(job.number), " ".join(swept_overrides(job.overrides)), status, *values])
    console.print_table(f"sweep: {len(jobs)} job(s)", ["job", "overrides", "status", *metrics], rows)
    sweep_dir = os.path.commonpath([str(job.path) for job in jobs]) if len(jobs) > 1 else str(jobs[0].path)
    console.print_next([console.command_line("sslrun", "report", sweep_dir)])
    failed = [job for job in jobs if job.status]
    if failed:
        console.fail(f"{len(failed)} of {len(jobs)} job(s) failed: {', '.join(str(j.number) for j in failed)}", 1)


def checked(cfg: DictConfig, command: ModuleType) -> DictConfig:
    """``cfg`` typed by the command's schema, every value and cross-key check passed."""
    typed = validate(cfg, command.schema(cfg))
    if hasattr(command, "check"):
        command.check(typed)
    return typed


def precheck(name: str, command: ModuleType | str, overrides: list[str], multirun: bool = False) -> ModuleType:
    """Compose and check the config for every override combination (with ``multirun``, also the sweep a config file
    declares in ``hydra.sweeper.params``, e.g. ``+sweep=...``); raise UserError on the first problem. Return the
    command's module.

    Two passes: names, keys and the values of every key whose schema is in ``sslrun.config`` first, before ``command``
    (a module name) is imported, so the common mistakes answer without importing torch; then, imported, the method's
    and the optimizer's own keys and the command's cross-key ``check``."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as err:
        raise UserError(
            f"cannot parse overrides: {str(err).splitlines()[0]}; a value with spaces or other special characters "
            "goes in quotes Hydra sees, e.g. \"data.root='/my data/images'\""
        ) from None
    launcher = next((str(o.value()) for o in parsed if o.key_or_group == "hydra/launcher"), None)
    parsed = [o for o in parsed if not o.key_or_group.startswith("hydra")]
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        if multirun:
            parsed = _file_sweep(name, parsed, parser) + parsed
            swept = sorted(o.key_or_group.lstrip("+~") for o in parsed if o.is_sweep_override())
            os.environ[SWEPT_KEYS] = ",".join(swept)  # for job_dirname, in this process and the launcher's
        combos = sweep_combinations(parsed) if parsed else [[]]
        loader = GlobalHydra.instance().config_loader()
        groups = set(loader.list_groups(""))
        composed = [_check_combo(name, combo, loader, groups) for combo in combos]
    GlobalHydra.instance().clear()
    if isinstance(command, str):
        command = importlib.import_module(command)
    for cfg in composed:
        checked(cfg, command)
        check_nodes(int(OmegaConf.select(cfg, "trainer.num_nodes", default=1)), launcher)
    if launcher and "slurm" in launcher:
        partition = next((o.value() for o in OverridesParser.create().parse_overrides(overrides)
                          if o.key_or_group == "hydra.launcher.partition"), None)  # fmt: skip
        check_slurm_launcher(partition)
    return command


def _file_sweep(name: str, parsed: list, parser: OverridesParser) -> list:
    """The overrides of ``hydra.sweeper.params`` in the config composed with the command line's added configs
    (``+sweep=...``), less the keys the command line sets itself (which win, as in Hydra's basic sweeper)."""
    added = [o.input_line for o in parsed if (o.is_add() or o.is_force_add()) and not o.is_sweep_override()]
    try:
        params = OmegaConf.select(
            compose(config_name=name, overrides=added, return_hydra_config=True), "hydra.sweeper.params"
        )
    except HydraException as err:
        raise UserError(" ".join(str(err).split())) from None
    given = {o.key_or_group for o in parsed}
    lines = [f"{key}={value}" for key, value in (params or {}).items() if key not in given]
    return parser.parse_overrides(lines)


def _check_combo(name: str, combo: list[str], loader, groups: set[str]) -> DictConfig:
    """The config of one combination, its group choices, keys and shared values checked (``shared_schema``)."""
    items = OverridesParser.create().parse_overrides(combo)
    group_overrides = []
    for item in items:
        key = item.key_or_group
        if key in groups and not item.is_delete():
            options = loader.get_group_options(key)
            for value in _choices(item):
                if value not in options:
                    raise UserError(unknown_name_message(key, value, options))
            group_overrides.append(item.input_line)
    base = _compose(name, group_overrides)
    for item in items:
        key = item.key_or_group
        if key in groups or item.is_add() or item.is_force_add():
            continue
        if not _has_key(base, key):
            raise UserError(unknown_key_message(base, key))
    cfg = _compose(name, combo)
    validate(cfg, shared_schema(COMMAND_SCHEMAS[name]))
    return cfg


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg``, also when its value is still missing (``???``)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node.keys()


def _choices(item) -> list[str]:
    value = item.value()
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _compose(name: str, overrides: list[str]) -> DictConfig:
    try:
        return compose(config_name=name, overrides=overrides)
    except HydraException as err:
        raise UserError(" ".join(str(err).split())) from None
