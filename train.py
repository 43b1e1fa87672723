"""Thin Hydra entry point: ``accelerate launch train.py task=retrieval``."""
import sys

import hydra
from omegaconf import DictConfig

from multitask.engine import run
from multitask.errors import UserError


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except UserError as err:  # the input's fault: one clear line, no traceback (a bug still shows its traceback)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
