"""Write the downstream distribution to disk in the CoOp layout, so it loads like a real data set.

<out>/images/<class_name>/<split>_<k>.png, <out>/split_zhou_Shapes.json ({"train", "val",
"test"}: [path relative to images/, label, classname], labels ordered as the class names) and
<out>/world.json (the dials, the seed and which files are infrared, for per-domain analysis).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image

from training.shapes.world import SHIFTED, WorldConfig, classnames, downstream_sample

log = logging.getLogger(__name__)

SPLIT_FILE = "split_zhou_Shapes.json"


def export_downstream(
    out_dir: str | Path,
    n_per_class_train: int,
    n_per_class_test: int,
    seed: int = 0,
    world: WorldConfig | None = None,
    n_per_class_val: int = 4,
) -> dict[str, list[list]]:
    """Render and save the downstream data set; returns the split written to SPLIT_FILE."""
    world = world or WorldConfig()
    out = Path(out_dir)
    names = classnames()
    split: dict[str, list[list]] = {}
    infrared: list[str] = []
    for key, per_class in (("train", n_per_class_train), ("val", n_per_class_val), ("test", n_per_class_test)):
        split[key] = []
        for label, name in enumerate(names):
            folder = out / "images" / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                pixels, domain = downstream_sample(world, seed, key, label * per_class + k, label)
                rel = f"{folder.name}/{key}_{k:04d}.png"
                Image.fromarray(pixels).save(out / "images" / rel)
                split[key].append([rel, label, name])
                if domain == SHIFTED:
                    infrared.append(rel)
    (out / SPLIT_FILE).write_text(json.dumps(split) + "\n")
    meta = {"seed": seed, "world": world.to_dict(), "classnames": names, "infrared": infrared}
    (out / "world.json").write_text(json.dumps(meta, indent=1) + "\n")
    log.info("exported %s to %s", {k: len(v) for k, v in split.items()}, out)
    return split
