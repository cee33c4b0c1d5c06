"""Who starts the processes of a run, and what each of them needs to agree on (used by ``main.py``).

Lightning finds out by itself how its processes were started: by its own subprocess launcher (``trainer=ddp`` in a
plain ``python main.py``), by ``torchrun`` (``TorchElasticEnvironment``) or by ``srun`` / the submitit launcher on
SLURM (``SLURMEnvironment``). Three things are ours:

- **One run folder for every rank.** Under ``torchrun`` or ``srun`` each process composes its own config, and
  ``${now:...}`` in the run folder's name can differ by a second between them. :func:`share_run_name` names the run
  once for all of them, through ``TAGRETRIEVAL_RUN_NAME`` (read by ``conf/hydra/default.yaml``): the launch time of
  the ``torchrun`` agent (one node), its rendezvous id (several nodes), or the SLURM job and step. Set the variable
  yourself (the same on every node) to name the run; an explicit ``hydra.run.dir`` wins over both. Ranks other than
  0 write no ``.hydra/`` folder and log to ``rank<N>.log`` (:func:`rank_overrides`).
- **Sweeps of DDP jobs.** Lightning's subprocess launcher starts the other ranks by running the command line again;
  in a Hydra sweep that command line holds ``--multirun`` and the sweep lists, and every child would run the whole
  sweep. :func:`run_sweep_job_alone` runs such a job as its own single run (``python main.py OVERRIDES
  hydra.run.dir=JOB_DIR``), whose command line Lightning can repeat. Jobs whose processes the launcher starts
  (submitit on SLURM: one task per GPU) need nothing.
- **submitit's local executor** starts ``tasks_per_node`` processes without any variable Lightning reads:
  :func:`export_submitit_local_ranks` exports ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE`` from submitit's job environment, so Lightning takes them as processes started externally.

This module is imported before Hydra composes the config: it imports nothing heavy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

RUN_NAME_VARIABLE = "TAGRETRIEVAL_RUN_NAME"
"""Names the run folder (``outputs/<name>``) when set; one value for every process of a run."""
RUN_NAME_FORMAT = "%Y-%m-%d/%H-%M-%S"
"""The run folder's name from a time, as Hydra's default ``${now:%Y-%m-%d}/${now:%H-%M-%S}``."""

# Lightning's rules (lightning.fabric.plugins.environments), restated here so that main.py need not import torch:
_TORCHELASTIC = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")  # TorchElasticEnvironment.detect
_SLURM_INTERACTIVE = ("bash", "interactive")  # SLURMEnvironment: a job with this name is not a SLURM launch
_SPAWNING_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def _under_torchrun(environ: Mapping[str, str]) -> bool:
    return all(name in environ for name in _TORCHELASTIC)


def _under_srun(environ: Mapping[str, str]) -> bool:
    """A task of a multi-task ``srun`` step (what Lightning's ``SLURMEnvironment`` takes as the launcher)."""
    return ("SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1
            and environ.get("SLURM_JOB_NAME") not in _SLURM_INTERACTIVE)


def _process_start_time(pid: int) -> float:
    """When process ``pid`` started (seconds since the epoch), from ``/proc`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    boot_time = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
    return boot_time + start_ticks / os.sysconf("SC_CLK_TCK")


def shared_run_name(environ: Mapping[str, str]) -> str | None:
    """The run's name, the same in every process of an external launch; None for a process started alone.

    ``torchrun`` on one node: the agent's (this process's parent's) start time, formatted as
    :data:`RUN_NAME_FORMAT`; on several nodes: ``torchrun-<rendezvous id>`` (pass ``--rdzv-id``). ``srun``:
    ``slurm-<job id>.<step id>``.
    """
    if _under_torchrun(environ):
        run_id = environ.get("TORCHELASTIC_RUN_ID", "none")
        if int(environ.get("GROUP_WORLD_SIZE", "1")) > 1 and run_id not in ("", "none"):
            return "torchrun-" + re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
        try:
            started = _process_start_time(os.getppid())
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return time.strftime(RUN_NAME_FORMAT, time.localtime(started))
    if _under_srun(environ):
        return f"slurm-{environ.get('SLURM_JOB_ID', 'job')}.{environ['SLURM_STEP_ID']}"
    return None


def share_run_name(environ: os._Environ | dict = os.environ) -> str | None:
    """Set ``TAGRETRIEVAL_RUN_NAME`` to :func:`shared_run_name` unless it is set; returns the name in effect."""
    if RUN_NAME_VARIABLE not in environ:
        name = shared_run_name(environ)
        if name is None:
            return None
        environ[RUN_NAME_VARIABLE] = name
    return environ[RUN_NAME_VARIABLE]


def launcher_rank(environ: Mapping[str, str]) -> int:
    """The global rank an external launcher gave this process (torchrun ``RANK``, srun ``SLURM_PROCID``), else 0."""
    if _under_torchrun(environ):
        return int(environ["RANK"])
    if _under_srun(environ):
        return int(environ.get("SLURM_PROCID", "0"))
    return 0


def rank_overrides(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """Hydra overrides for a rank other than 0 of an external launch: no ``.hydra/`` of its own (rank 0 writes it),
    its log in ``rank<N>.log``. Lightning gives the ranks it starts the same (``train_ddp_process_<N>``)."""
    rank = launcher_rank(environ)
    if rank == 0 or any(a.startswith(("hydra.output_subdir=", "hydra.job.name=")) for a in argv):
        return []
    return ["hydra.output_subdir=null", f"hydra.job.name=rank{rank}"]


def export_submitit_local_ranks(environ: os._Environ | dict = os.environ) -> bool:
    """In a job of submitit's local executor with several tasks, export the torch.distributed variables of this
    task (``LOCAL_RANK`` tells Lightning the processes were started for it); True if it did."""
    if int(environ.get("SUBMITIT_LOCAL_NTASKS", "1")) <= 1 or "LOCAL_RANK" in environ:
        return False
    from submitit.helpers import TorchDistributedEnvironment  # only in such a job: submitit is installed

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    environ.setdefault("NODE_RANK", "0")
    return True


def _n_devices(devices: object, accelerator: str) -> int:
    if isinstance(devices, int) and devices >= 0:
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    text = str(devices).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if accelerator in ("gpu", "cuda", "auto"):  # "auto" / -1: every visible GPU
        import torch

        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    return 1


def n_training_processes(trainer: DictConfig) -> int:
    """Processes of one training run: ``trainer.devices`` (a count, a list, ``"0,1"``, or ``auto``/-1: every visible
    GPU) x ``trainer.num_nodes``, at least one per node."""
    n_devices = _n_devices(trainer.get("devices", "auto"), str(trainer.get("accelerator", "auto")))
    return max(1, n_devices) * int(trainer.get("num_nodes", 1))


def lightning_starts_processes(trainer: DictConfig, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``Trainer(**trainer)`` would start its other ranks itself (its subprocess launcher): a DDP strategy
    over more than one device and no external launcher (``LOCAL_RANK``, torchrun, srun)."""
    strategy = str(trainer.get("strategy", "auto"))
    n_processes = n_training_processes(trainer)
    external = "LOCAL_RANK" in environ or _under_torchrun(environ) or (
        "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in _SLURM_INTERACTIVE)
    return strategy in _SPAWNING_STRATEGIES and n_processes > 1 and not external


def run_sweep_job_alone(*, script: str | Path, hydra: DictConfig, trainer: DictConfig) -> bool:
    """If this is a job of a Hydra sweep whose DDP processes Lightning would start, run it as its own
    ``python SCRIPT OVERRIDES hydra.run.dir=JOB_DIR`` and return True (the caller then does nothing else); else
    return False. The job's ``.hydra/`` (written by the sweep) is kept; a failing job raises CalledProcessError."""
    export_submitit_local_ranks()
    from hydra.types import RunMode

    if hydra.mode != RunMode.MULTIRUN or not lightning_starts_processes(trainer):
        return False
    dropped = ("hydra.run.dir=", "hydra.output_subdir=", "hydra.mode=", "hydra.job.name=")
    overrides = [o for o in [*hydra.overrides.hydra, *hydra.overrides.task] if not o.startswith(dropped)]
    command = [sys.executable, str(script), *overrides, f'hydra.run.dir="{hydra.runtime.output_dir}"',
               "hydra.output_subdir=null"]
    print(f"sweep job {hydra.job.num}: DDP processes started by Lightning, so the job runs as its own command: "
          + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=hydra.runtime.cwd)
    return True
