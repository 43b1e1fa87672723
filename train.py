"""Thin Hydra entry point: ``accelerate launch train.py task=retrieval``."""
import sys

import hydra
from omegaconf import DictConfig

from multitask.engine import quote_overrides, run
from multitask.errors import UserError


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except UserError as err:  # the input's fault: one clear line, no traceback (a bug still shows its traceback)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv[1:] = quote_overrides(sys.argv[1:])  # data.shards=/d/{00000..00099}.tar without shell-and-Hydra quoting
    main()
