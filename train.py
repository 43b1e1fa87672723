"""Thin Hydra entry point: ``accelerate launch train.py task=retrieval``."""
import hydra
from omegaconf import DictConfig

from multitask.engine import run


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
