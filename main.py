"""`python main.py [mode=train|test|prepare|retrieve|tag|export|report|baseline] [group=option ...]` (see README)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tagretrieval import launch


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if launch.run_sweep_job_alone(script=__file__, hydra=hydra_cfg, trainer=cfg.trainer):
        return  # a sweep job whose DDP ranks Lightning starts ran as its own `python main.py` (launch.py)
    from tagretrieval.tasks import run  # imported here so that `--help` stays fast

    run(cfg, output_dir=hydra_cfg.runtime.output_dir)


if __name__ == "__main__":
    launch.share_run_name()  # torchrun, srun: one run folder for every rank
    sys.argv += launch.rank_overrides(sys.argv[1:])
    main()
