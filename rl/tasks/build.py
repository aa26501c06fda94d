"""Builds the embedded base model a run needs when it is missing or its recipe has changed since it was built.

`python -m rl.tasks.build --config configs/tiny-code.yaml [overrides]` (what `make train` and `make eval` run
first) or `python -m rl.tasks.build --model models/tiny-moe-base`. A model path that is not an embedded one
(a hub id, your own folder) is left alone.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from rl.tasks.pretrain import Recipe, build

EMBEDDED = {  # model path -> the module whose RECIPE makes it
    "models/tiny-moe-base": "rl.tasks.arithmetic.base_model",
    "models/tiny-code-base": "rl.tasks.code.base_model",
    "models/tiny-dsv3-base": "rl.tasks.arithmetic.deepseek",
    "models/tiny-tir-base": "rl.tasks.tir.base_model",
    "models/tiny-countdown-base": "rl.tasks.countdown.base_model",
}


def recipe_for(path: str) -> Recipe | None:
    """The recipe of an embedded model path (relative to the repository root), else None."""
    module = EMBEDDED.get(os.path.normpath(path))
    return importlib.import_module(module).RECIPE if module else None


def ensure(path: str) -> bool:
    """Build the embedded model at `path` unless it is there and current; True if it was built."""
    recipe = recipe_for(path)
    if recipe is None or recipe.is_built(Path(path)):
        return False
    print(f"base-model: building {path} ({'its recipe changed' if Path(path).exists() else 'not built yet'})", flush=True)
    build(recipe, Path(path))
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="the run's YAML: builds its model.path")
    group.add_argument("--model", help="an embedded model path, e.g. models/tiny-moe-base")
    args, overrides = p.parse_known_args()
    if args.model is not None:
        if recipe_for(args.model) is None:
            p.error(f"{args.model!r} is not an embedded model; embedded: {sorted(EMBEDDED)}")
        path = args.model
    else:
        from rl.config import load_config

        path = load_config(args.config, overrides).model.path
    ensure(path)


if __name__ == "__main__":
    main()
