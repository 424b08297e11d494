"""``hydra/launcher=submitit_slurm`` and ``submitit_local`` for sslrun: the submitit plugin's launchers, which also
print each job's id and run dir once submitted and hand the jobs' outcomes back to the sweep summary.

A job that gets the scheduler's preemption signal writes its checkpoint at the next batch end and is requeued by
submitit (``sslrun.cluster.Preemption``); the requeued job runs the same overrides in the same run dir, and
``resume=auto`` continues it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as base
from omegaconf import open_dict


class _Reporting:
    """The sslrun part of both launchers."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sslrun import app

        config = self.config
        with open_dict(config.hydra.sweep):
            # a literal: a requeued job must meet the same sweep dir, whatever ${now:...} would say then
            config.hydra.sweep.dir = str(config.hydra.sweep.dir)
        executor, params = self._executor()
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            job_params.append(
                (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", base.Singleton.get_state())
            )
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        rows = [[job.job_id, str(self._run_dir(o, i))] for job, (o, _, i, _, _) in zip(jobs, job_params, strict=True)]
        # plain lines, not a table: a run dir is pasted whole into the next command
        print(f"submitted {len(jobs)} job(s) ({self._EXECUTOR}):", flush=True)
        for job_id, run_dir in rows:
            print(f"  job {job_id}: {run_dir}", flush=True)
        print(f"submitit's files (scripts, stdout, stderr of each job): {params['submitit_folder']}", flush=True)
        results: list[JobReturn] = []
        for job, (overrides, _, number, _, _), (_, run_dir) in zip(jobs, job_params, rows, strict=True):
            try:
                result = job.results()[0]
                outcome = result._return_value
            except Exception as err:  # noqa: BLE001 - killed, out of requeues, or its process failed
                result, outcome = None, err
            if isinstance(outcome, app.Job):
                app.REMOTE_JOBS.append(outcome)
            else:  # the job's own summary never came back: the sweep's table says why, with where to look
                why = " ".join(str(outcome).split())[:300] or type(outcome).__name__
                message = f"{why} (its stderr: {job.paths.stderr})"
                app.REMOTE_JOBS.append(
                    app.Job(number, overrides, Path(run_dir), True, status=1, label="lost", message=message)
                )
            # the sweep's summary (sslrun.app) reports failures: Hydra is told every job came back
            results.append(
                result
                if result is not None and result.status == JobStatus.COMPLETED
                else JobReturn(status=JobStatus.COMPLETED)
            )
        return results

    def _executor(self) -> tuple[Any, dict]:
        import submitit

        params = dict(self.params)
        init = {"folder": params["submitit_folder"]}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(base.OmegaConf.structured(base.BaseQueueConf).keys())
        rest = {
            k if k in shared else f"{self._EXECUTOR}_{k}": v
            for k, v in params.items()
            if k not in ("submitit_folder", "max_num_timeout")
        }
        executor.update_parameters(**rest)
        return executor, params

    def _run_dir(self, overrides: list[str], number: int) -> Path:
        sweep = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep.hydra.job):
            sweep.hydra.job.num = number
        return Path(sweep.hydra.sweep.dir) / str(sweep.hydra.sweep.subdir)


class SlurmLauncher(_Reporting, base.SlurmLauncher):
    pass


class LocalLauncher(_Reporting, base.LocalLauncher):
    pass
