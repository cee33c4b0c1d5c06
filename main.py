"""`python main.py [mode=train|test|prepare|retrieve|tag|export|report|baseline] [group=option ...]` (see README).

A mistake of the user's (tagretrieval.runtime.errors.UserError) prints one `error: ...` line and exits with status 2; its
traceback only with HYDRA_FULL_ERROR=1 or debug=default. Any other exception keeps its traceback.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from tagretrieval.runtime import launch, preflight


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        preflight.check(cfg)  # before torch and Lightning are imported: a wrong setting fails in a second
        if launch.run_sweep_job_alone(script=__file__, hydra=hydra_cfg, trainer=cfg.trainer):
            return  # a sweep job whose DDP ranks Lightning starts ran as its own `python main.py` (launch.py)
        from tagretrieval.tasks import run

        run(cfg, output_dir=hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))
    except Exception as error:
        user_error = preflight.user_error(error)
        if user_error is None or preflight.show_traceback(hydra_cfg.runtime.choices):
            raise
        print(preflight.one_line(user_error), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    launch.share_run_name()  # torchrun, srun: one run folder for every rank
    sys.argv += launch.rank_overrides(sys.argv[1:])
    main()
