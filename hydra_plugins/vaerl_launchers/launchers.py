"""vaerl's Hydra launchers: checked front ends to Hydra's own submitit (SLURM) and joblib plugins.

``configs/hydra/launcher/slurm.yaml`` and ``local.yaml`` target these classes rather than the plugins
directly, so that

* a plugin that is not installed is named together with the extra that installs it, instead of
  Hydra's "could not load hydra/launcher/...";
* a SLURM preset without a partition or a time limit stops with the override to add, before anything
  is submitted;
* a preempted or timed-out SLURM job is requeued with the same overrides (submitit calls the plugin's
  ``checkpoint``), so it lands in the same run directory and resumes from its last checkpoint.

Hydra only accepts launchers defined under the ``hydra_plugins`` namespace and imports every module here
whenever an app starts, so this module stays self-contained and imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

EXTRA = 'pip install -e ".[cluster]"'
"""How to install every launcher plugin vaerl ships a preset for."""

SLURM_REQUIRED = {
    "partition": ("hydra.launcher.partition=<partition>", "VAERL_SLURM_PARTITION"),
    "timeout_min": ("hydra.launcher.timeout_min=<minutes>", "VAERL_SLURM_TIMEOUT_MIN"),
}
"""Settings a SLURM preset cannot guess: the override that supplies each, and the variable that sets its default."""


class LauncherNotInstalled(ImportError):
    """The Hydra launcher plugin a preset needs is not installed."""


class _Delegating(Launcher):
    """Forwards ``setup`` and ``launch`` to the plugin's launcher built in ``__init__``."""

    def __init__(self, inner: Launcher) -> None:
        self.inner = inner

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.inner.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.inner.launch(job_overrides, initial_job_idx)


class SlurmLauncher(_Delegating):
    """hydra-submitit-launcher's SLURM launcher, after checking that partition and time limit are set."""

    def __init__(self, **params: Any) -> None:
        check_slurm_params(params)
        plugin = _plugin("hydra_submitit_launcher.submitit_launcher", "hydra-submitit-launcher", "slurm")
        super().__init__(plugin.SlurmLauncher(**params))


class JoblibLauncher(_Delegating):
    """hydra-joblib-launcher: the sweep's runs as parallel processes on this machine."""

    def __init__(self, **params: Any) -> None:
        plugin = _plugin("hydra_joblib_launcher.joblib_launcher", "hydra-joblib-launcher", "local")
        super().__init__(plugin.JoblibLauncher(**params))


def check_slurm_params(params: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming each override a SLURM submission still needs."""
    missing = [(override, variable) for key, (override, variable) in SLURM_REQUIRED.items()
               if params.get(key) in (None, "", "???")]
    if missing:
        raise ValueError(f"the SLURM launcher needs {' and '.join(o for o, _ in missing)} on the command line "
                         f"(or {' and '.join(v for _, v in missing)} in the environment); nothing was submitted "
                         "(`sinfo` lists the partitions and their time limits)")
    if int(params["timeout_min"]) <= 0:
        raise ValueError(f"hydra.launcher.timeout_min={params['timeout_min']} must be a positive number of minutes")


def _plugin(module: str, package: str, preset: str) -> Any:
    try:
        return importlib.import_module(f"hydra_plugins.{module}")
    except ImportError as exc:
        raise LauncherNotInstalled(f"hydra/launcher={preset} needs the {package} plugin, which is not installed: "
                                   f"{EXTRA} installs it") from exc
