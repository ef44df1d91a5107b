"""Build local Demucs model repos with random weights, for benchmarks without downloads.

Writes into bench/models/ (ignored by git), laid out like demucs' own remote repo so that both
``python -m demucs -n NAME --repo bench/models`` and ``DemucsSeparator(NAME, model_repo=...)``
load them:

- ``htdemucs.yaml`` + ``955717e8.th``: one HTDemucs with the exact architecture of the released
  ``htdemucs`` (41.98 M parameters, 7.8 s segment).
- ``htdemucs_ft.yaml`` + four ``.th``: an ``htdemucs_ft``-shaped bag (four such models, one per
  source, identity bag weights), the yaml copied from demucs' own ``remote/htdemucs_ft.yaml``.

Random weights run exactly as fast as trained ones, but their output is noise: never use these
models to judge separation quality.  Usage: ``python bench/make_models.py [--out DIR]``.
"""

import argparse
import shutil
from fractions import Fraction
from pathlib import Path

SOURCES = ["drums", "bass", "other", "vocals"]
# demucs conf/config.yaml `htdemucs:` defaults + the overrides of the released model (grids/mmi.py:
# dconv_mode 3, bottom_channels 512, 5 transformer layers); segment as stored in its checkpoint.
HTDEMUCS_KWARGS = dict(sources=SOURCES, audio_channels=2, samplerate=44100,
                       segment=Fraction(39, 5), dconv_mode=3, bottom_channels=512, t_layers=5,
                       t_sparse_attn_window=400)


def write_model(path: Path, kwargs: dict, seed: int = 0, klass=None) -> None:
    """Save a randomly initialised demucs model as a ``.th`` package demucs' LocalRepo loads."""
    import torch
    if klass is None:
        from demucs.htdemucs import HTDemucs as klass
    torch.manual_seed(seed)
    model = klass(**kwargs)
    # Released packages store half-precision states; demucs upcasts them when loading.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"klass": klass, "args": (), "kwargs": kwargs, "state": state}, tmp)
    tmp.replace(path)


def build(out: Path) -> None:
    """Create ``htdemucs`` and ``htdemucs_ft`` in ``out`` (existing files are kept)."""
    import demucs.pretrained
    import yaml
    out.mkdir(parents=True, exist_ok=True)
    remote = Path(demucs.pretrained.REMOTE_ROOT)
    shared = out / "955717e8.th"  # the released htdemucs' signature
    if not shared.exists():
        write_model(shared, HTDEMUCS_KWARGS)
    for name in ("htdemucs", "htdemucs_ft"):
        for sig in yaml.safe_load((remote / f"{name}.yaml").read_text())["models"]:
            th = out / f"{sig}.th"
            if not th.exists():  # same architecture: weights do not change speed, share them
                th.symlink_to(shared.name)
        shutil.copyfile(remote / f"{name}.yaml", out / f"{name}.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    args = parser.parse_args()
    build(args.out)
    print(f"model repo ready: {args.out}")


if __name__ == "__main__":
    main()
