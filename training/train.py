#!/usr/bin/env python3
"""``mmdrfuse train`` as a script: the path ``torchrun`` needs (see training/README.md).

    python training/train.py --data ../shared/data/roadscene --out runs/cpu --preset cpu
    torchrun --nproc_per_node 4 training/train.py --data LLVIP --subdir train --out runs/paper \
        --preset paper --vgg-weights vgg19.pth
"""

from __future__ import annotations

import sys

from mmdrfuse_ros.training.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="training/train.py"))
