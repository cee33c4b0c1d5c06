"""Beyond one machine: torchrun, SLURM through the submitit launcher, sweeps of DDP jobs (all on CPU, gloo)."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_SYNTHETIC, read_metrics, run_task
from tagretrieval.runtime import launch
from test_concurrent_prepare import decode_counting_env, decodes

CPU_DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_py(args: list[str], *, cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def assert_metrics_close(got, want, *, tol: float, where: str = "") -> None:
    """Equal structure; numbers within ``tol``."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_metrics_close(got[key], want[key], tol=tol, where=f"{where}/{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_metrics_close(g, w, tol=tol, where=f"{where}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=0, abs_tol=tol), f"{where}: {got} != {want}"
    else:
        assert got == want, where


# ---------------------------------------------------------------- launch.py, without processes
def test_the_ranks_of_an_external_launch_share_one_run_name():
    torchrun = {"RANK": "1", "GROUP_RANK": "0", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "1",
                "TORCHELASTIC_RUN_ID": "none"}
    # one node: the torchrun agent's start time, the same for every worker it started (here: our parent)
    name = launch.shared_run_name(torchrun)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", name)
    assert launch.shared_run_name({**torchrun, "GROUP_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "job 7"}) \
        == "torchrun-job_7"
    srun = {"SLURM_JOB_ID": "123", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "16", "SLURM_PROCID": "5",
            "SLURM_JOB_NAME": "train"}
    assert launch.shared_run_name(srun) == "slurm-123.0"
    assert launch.shared_run_name({}) is None  # a process started alone keeps Hydra's ${now:...}
    assert launch.shared_run_name({**srun, "SLURM_JOB_NAME": "interactive"}) is None  # Lightning's rule too
    # who writes .hydra/: rank 0 only
    assert launch.rank_overrides([], torchrun) == ["hydra.output_subdir=null", "hydra.job.name=rank1"]
    assert launch.rank_overrides([], srun) == ["hydra.output_subdir=null", "hydra.job.name=rank5"]
    assert launch.rank_overrides([], {**torchrun, "RANK": "0"}) == []
    environ = dict(torchrun)
    launch.share_run_name(environ)
    assert environ[launch.RUN_NAME_VARIABLE] == name
    mine = {**torchrun, launch.RUN_NAME_VARIABLE: "mine"}
    assert launch.share_run_name(mine) == "mine"  # set by the user (the same on every node): kept


def test_lightning_starts_processes_only_for_ddp_without_an_external_launcher():
    from omegaconf import OmegaConf

    ddp = OmegaConf.create({"strategy": "ddp", "devices": 2, "accelerator": "cpu", "num_nodes": 1})
    assert launch.lightning_starts_processes(ddp, {})
    assert not launch.lightning_starts_processes(ddp, {"LOCAL_RANK": "0"})  # torchrun, submitit local, ...
    assert not launch.lightning_starts_processes(ddp, {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "main"})
    assert launch.lightning_starts_processes(ddp, {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "interactive"})
    one = OmegaConf.create({"accelerator": "cpu", "devices": 1})
    assert not launch.lightning_starts_processes(one, {})


# ---------------------------------------------------------------- SLURM through the submitit launcher
FAKE_SLURM_HOOK = '''
import json
import os

if os.environ.get("TAGRETRIEVAL_TEST_FAKE_SLURM"):
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core import utils
    from submitit.slurm import slurm

    slurm.SlurmExecutor.affinity = classmethod(lambda cls: 2)  # there is no srun here

    class Submitted:
        def results(self):
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

    def submit(self, delayed_submissions):
        """What sbatch would be given, recorded instead of submitted: the script, and each job's pickle
        where submitit puts it (job id 4242, or 4242_<i> for an array)."""
        n = len(delayed_submissions)
        parameters = dict(self.parameters, **({"map_count": n} if n > 1 else {}))
        script = slurm._make_sbatch_string(command=self._submitit_command_str, folder=self.folder, **parameters)
        job_ids = [f"4242_{i}" if n > 1 else "4242" for i in range(n)]
        for job_id, delayed in zip(job_ids, delayed_submissions):
            paths = utils.JobPaths(self.folder, job_id=job_id)
            paths.folder.mkdir(parents=True, exist_ok=True)
            delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
            delayed.dump(paths.submitted_pickle)
        with open(os.environ["TAGRETRIEVAL_TEST_FAKE_SLURM"], "w") as f:
            json.dump({"sbatch": script, "folder": str(self.folder), "job_ids": job_ids,
                       "overrides": [list(d.args[0]) for d in delayed_submissions]}, f)
        return [Submitted() for _ in delayed_submissions]

    slurm.SlurmExecutor._internal_process_submissions = submit
'''


def fake_slurm_env(tmp_path: Path) -> tuple[dict, Path]:
    hook = tmp_path / "slurm_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAKE_SLURM_HOOK)
    record = tmp_path / "submitted.json"
    return {"PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "TAGRETRIEVAL_TEST_FAKE_SLURM": str(record)}, record


def sbatch_options(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))


def test_a_slurm_sweep_submits_one_ddp_job_per_configuration(tmp_path):
    env, record = fake_slurm_env(tmp_path)
    main_py(["-m", "hydra/launcher=slurm", "sampler=random,balanced", "model=acoustic,cultural", "trainer=ddp",
             "trainer.devices=8", "trainer.num_nodes=4", "hydra.launcher.partition=gpu", "hydra.launcher.account=lab",
             "hydra.launcher.qos=high", "hydra.launcher.constraint=a100", "hydra.launcher.cpus_per_task=10",
             "hydra.launcher.mem_gb=200", "hydra.launcher.timeout_min=600", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            cwd=tmp_path, env=env, timeout=300)
    submitted = json.loads(record.read_text())
    # one job per configuration of the sweep, as one job array
    jobs = [dict(o.split("=", 1) for o in overrides) for overrides in submitted["overrides"]]
    assert sorted((job["sampler"], job["model"]) for job in jobs) == sorted(
        (s, m) for s in ("random", "balanced") for m in ("acoustic", "cultural"))
    assert all(job["trainer.devices"] == "8" and job["trainer.num_nodes"] == "4" for job in jobs)
    options = sbatch_options(submitted["sbatch"])
    assert options["array"] == "0-3%4"
    # each job a DDP run over 4 nodes x 8 GPUs: SLURM starts one task per GPU, and the job's settings are the overrides
    assert {k: options[k] for k in ("nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task", "mem", "time",
                                    "partition", "account", "qos", "constraint")} == {
        "nodes": "4", "ntasks-per-node": "8", "gpus-per-node": "8", "cpus-per-task": "10", "mem": "200GB",
        "time": "600", "partition": "gpu", "account": "lab", "qos": "high", "constraint": "a100"}
    assert re.search(r"^srun .* -u -m submitit\.core\._submit ", submitted["sbatch"], flags=re.M)
    assert submitted["folder"] == str(tmp_path / "sweep" / ".submitit" / "%j")


@pytest.mark.parametrize("shape, want", [
    (["trainer=gpu"], {"nodes": "1", "ntasks-per-node": "1", "gpus-per-node": "1"}),
    (["trainer=ddp", "trainer.devices=8"], {"nodes": "1", "ntasks-per-node": "8", "gpus-per-node": "8"}),
    (["trainer=ddp", "trainer.devices=8", "trainer.num_nodes=4"],
     {"nodes": "4", "ntasks-per-node": "8", "gpus-per-node": "8"}),
], ids=["1 GPU", "1 node x 8 GPUs", "4 nodes x 8 GPUs"])
def test_the_readme_job_shapes_become_these_sbatch_options(tmp_path, shape, want):
    env, record = fake_slurm_env(tmp_path)
    main_py(["-m", "hydra/launcher=slurm", *shape, "hydra.launcher.partition=gpu",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env, timeout=300)
    submitted = json.loads(record.read_text())
    options = sbatch_options(submitted["sbatch"])
    assert {k: options[k] for k in want} == want and options["partition"] == "gpu"
    assert "array" not in options and len(submitted["overrides"]) == 1  # one configuration, one job


@pytest.mark.slow
def test_a_submitted_job_runs_as_one_ddp_run_of_the_tasks_slurm_starts(tmp_path, smoke_overrides):
    """The job as SLURM runs it: ``srun`` starts ``ntasks-per-node`` copies of the sbatch script's command, each with
    its SLURM variables; Lightning's SLURMEnvironment makes them one DDP run (no process is started by Lightning)."""
    env, record = fake_slurm_env(tmp_path)
    sweep = tmp_path / "sweep"
    main_py(["-m", "hydra/launcher=slurm", *smoke_overrides, *CPU_DDP, "hydra.launcher.gpus_per_node=null",
             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, timeout=300)
    submitted = json.loads(record.read_text())
    options = sbatch_options(submitted["sbatch"])
    assert options["ntasks-per-node"] == "2" and "gpus-per-node" not in options
    command = re.search(r"^srun .*? (\S+ -u -m submitit\.core\._submit .*)$", submitted["sbatch"], flags=re.M)
    job_id = submitted["job_ids"][0]
    srun = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": options["job-name"],
            "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1",
            "SLURM_NODEID": "0", "SLURM_STEP_ID": "0", "SLURM_JOB_NODELIST": "127.0.0.1",
            "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(free_port())}
    tasks = [subprocess.Popen(command.group(1), shell=True, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
                              env={**os.environ, **srun, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)})
             for rank in range(2)]
    outputs = [task.communicate(timeout=900)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    metrics = read_metrics(sweep / "0")
    assert metrics["n_songs"] > 0
    logs = "\n".join(outputs)  # what srun would write to .submitit/<job id>/<job id>_<task>_log.{out,err}
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs  # one process group of the two SLURM tasks
    assert "sweep job" not in logs  # and no re-run: SLURM, not Lightning, started the processes


# ---------------------------------------------------------------- submitit's local executor
@pytest.mark.slow
def test_a_local_sweep_runs_every_job_to_its_test_metrics(tmp_path, smoke_overrides):
    """Two jobs in parallel, each a DDP run of two processes that submitit starts (tasks_per_node =
    trainer.devices), as on SLURM."""
    sweep = tmp_path / "sweep"
    main_py(["-m", "hydra/launcher=local", *smoke_overrides, *CPU_DDP, "sampler=random,balanced",
             f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    for job, sampler in ((0, "random"), (1, "balanced")):
        assert read_metrics(sweep / str(job))["n_songs"] > 0
        assert f"sampler={sampler}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
        assert not list((sweep / str(job)).glob("train_ddp_process_*.log"))  # Lightning started no process
    logs = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert logs.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # one second rank per job, started by submitit


# ---------------------------------------------------------------- torchrun
@pytest.mark.slow
def test_torchrun_from_an_empty_data_folder_imports_once_and_matches_a_single_process_evaluation(tmp_path):
    env, log = decode_counting_env(tmp_path)
    data = tmp_path / "data"
    env["TAGRETRIEVAL_DATA_DIR"] = str(data)  # empty: the first rank generates and imports, the other waits
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(REPO / "main.py"), *CPU_DDP, "experiment=smoke", *TINY_SYNTHETIC, "progress=false", "logger=csv"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # one run folder for both ranks
    run = runs[0]
    assert (run / "rank1.log").exists() and (run / "main.log").exists()
    n_songs = int(next(o for o in TINY_SYNTHETIC if o.startswith("data.n_songs=")).split("=")[1])
    decoded = decodes(log)
    assert len(decoded) == n_songs and len({pid for pid, _ in decoded}) == 1  # one import, by one rank
    assert (run / "tag_vectors.npz").exists()  # the tag matrix, computed by one rank, read by the other

    single = tmp_path / "single"
    run_task([f"data.root={data / 'synthetic'}", *TINY_SYNTHETIC, "experiment=smoke", "progress=false", "logger=none",
              "mode=test", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}"], single)
    # the same weights on the same songs; the DDP ranks embed other batches of songs, so float32 scores may
    # differ in the last bits, which moves a metric only through an exact tie between two songs' scores
    assert_metrics_close(read_metrics(run), read_metrics(single), tol=1e-6)


# ---------------------------------------------------------------- a sweep of DDP jobs, processes from Lightning
@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_whose_processes_lightning_starts_runs_each_job_once(tmp_path, smoke_overrides):
    """``TRAINER=ddp bash run.sh``: each job runs as its own ``python main.py``, whose command line Lightning's
    launcher can repeat for the other rank (it used to repeat ``--multirun`` and the sweep lists)."""
    sweep = tmp_path / "sweep"
    done = main_py(["-m", *smoke_overrides, *CPU_DDP, "sampler=random,balanced", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path)
    assert done.stdout.count("runs as its own command") == 2
    assert (done.stdout + done.stderr).count("Launching 2 jobs") == 1  # the children did not sweep again
    for job in (0, 1):
        assert read_metrics(sweep / str(job))["n_songs"] > 0
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # no sweep inside a sweep


# ---------------------------------------------------------------- run.sh, the paper grid as one sweep
@pytest.mark.slow
def test_run_sh_imports_once_then_sweeps_the_grid_as_local_jobs(tmp_path):
    """``run.sh`` as docs/paper.md and docs/scale-out.md give it, on a miniature MSD500 release, the grid narrowed
    to two jobs (both word vector sets) and run by submitit's local executor, as on a cluster."""
    from test_msd500 import write_msd

    data = tmp_path / "msd"
    write_msd(data)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DATA": str(data), "LAUNCHER": "local", "TRAINER": "cpu",
           "EXPERIMENT": "smoke", "SAMPLERS": "random", "MODELS": "cultural", "SWEEP_DIR": str(sweep)}
    done = subprocess.run(["bash", str(REPO / "run.sh"), "trainer.max_epochs=1", "sampler.pairs_per_epoch=32",
                           "progress=false", "logger=none"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert (sweep / "prepare" / "prepare_report.json").exists()  # the import, before the jobs
    vectors = {}
    for job in (0, 1):
        assert read_metrics(sweep / str(job))["n_songs"] > 0
        overrides = (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
        vectors[job] = re.search(r"data\.word_vectors=(\w+)", overrides).group(1)
    assert sorted(vectors.values()) == ["google", "music"]
    compared = subprocess.run([sys.executable, "-m", "tagretrieval.reports.compare", str(sweep), "--by", "sampler",
                               "model", "data.word_vectors"], capture_output=True, text=True, timeout=300)
    assert compared.returncode == 0, compared.stderr
    assert "google" in compared.stdout and "music" in compared.stdout
