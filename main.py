"""`python main.py [mode=train|test|prepare|retrieve|tag|export|report|baseline] [group=option ...]` (see README)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from tagretrieval.tasks import run  # imported here so that `--help` stays fast

    run(cfg, output_dir=HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
