"""Build a local folder of RoFormer models with random weights, for tests and benchmarks
without downloads (python-audio-separator's architectures; needs the ``sota`` extra).

Two real published configurations, written as YAML beside a random-weight checkpoint:

- ``model_bs_roformer_ep_317_sdr_12.9755``: the BS-RoFormer of viperx, audio-separator's default
  model (ZFTurbo/Music-Source-Separation-Training configs/viperx/, same name).
- ``vocals_mel_band_roformer``: Kimberley Jensen's vocal Mel-Band RoFormer (the same repository,
  configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml).

``shrunk=True`` keeps each architecture, its STFT and its chunking but cuts the transformer to
one layer of width 32, so a test runs in a second instead of minutes on a CPU. The file names
carry ``_tiny`` then. Random weights run as fast as trained ones (for the full configs) but
their output is noise: never judge separation quality with them.

Usage: ``python bench/make_roformer_models.py [--out DIR] [--shrunk]``.
"""

import argparse
import copy
from pathlib import Path

_STFT = dict(dim_freqs_in=1025, stft_n_fft=2048, stft_hop_length=441, stft_win_length=2048,
             stft_normalized=False, mask_estimator_depth=2,
             multi_stft_resolution_loss_weight=1.0,
             multi_stft_resolutions_window_sizes=(4096, 2048, 1024, 512, 256),
             multi_stft_hop_size=147, multi_stft_normalized=False)
_AUDIO = dict(chunk_size=352800, dim_f=1024, hop_length=441, n_fft=2048, num_channels=2,
              sample_rate=44100, min_mean_abs=0.0)
_TRAINING = dict(batch_size=2, instruments=["vocals", "other"], target_instrument="vocals",
                 use_amp=True)
BS_FREQS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

CONFIGS = {
    "model_bs_roformer_ep_317_sdr_12.9755": {
        "audio": {**_AUDIO, "dim_t": 801},
        "model": dict(dim=512, depth=12, stereo=True, num_stems=1, time_transformer_depth=1,
                      freq_transformer_depth=1, linear_transformer_depth=0,
                      freqs_per_bands=BS_FREQS, dim_head=64, heads=8, attn_dropout=0.1,
                      ff_dropout=0.1, flash_attn=True, **_STFT),
        "training": _TRAINING,
        "inference": {"batch_size": 4, "dim_t": 801, "num_overlap": 2},
    },
    "vocals_mel_band_roformer": {
        "audio": {**_AUDIO, "dim_t": 256},
        "model": dict(dim=384, depth=6, stereo=True, num_stems=1, time_transformer_depth=1,
                      freq_transformer_depth=1, num_bands=60, dim_head=64, heads=8,
                      attn_dropout=0, ff_dropout=0, flash_attn=True, sample_rate=44100,
                      **_STFT),
        "training": _TRAINING,
        "inference": {"batch_size": 4, "dim_t": 256, "num_overlap": 2},
    },
}
_SHRINK = dict(dim=32, depth=1, dim_head=16, heads=2, attn_dropout=0, ff_dropout=0)


def config(name, shrunk=False, **model_overrides):
    """The configuration dict of ``name`` (a key of CONFIGS), shrunk or with overrides."""
    cfg = copy.deepcopy(CONFIGS[name])
    if shrunk:
        cfg["model"].update(_SHRINK)
    cfg["model"].update(model_overrides)
    return cfg


def file_name(name, shrunk=False):
    return f"{name}_tiny" if shrunk else name


def write_model(folder, name, shrunk=False, seed=0, target=None, instruments=None):
    """Write ``<file>.ckpt`` (random weights) and ``<file>.yaml`` into ``folder``; returns the
    checkpoint's path. ``target``/``instruments`` change what the model separates (a
    ``target=None`` with instruments: a multi-stem model)."""
    import torch
    import yaml
    from audio_separator.separator.roformer.roformer_loader import RoformerLoader

    cfg = config(name, shrunk)
    stem = file_name(name, shrunk)
    if instruments is not None:
        cfg["training"]["instruments"] = list(instruments)
        cfg["training"]["target_instrument"] = target
        cfg["model"]["num_stems"] = 1 if target else len(instruments)
        stem += "_" + ("+".join(instruments) if target is None else f"{target}_only")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    loader = RoformerLoader()
    kind = loader.config_normalizer.resolve_model_type(cfg, str(folder / f"{stem}.ckpt"))
    model_cfg = loader.config_normalizer.normalize_config(cfg, kind, apply_defaults=True,
                                                          validate=True)
    model = (loader._create_bs_roformer(model_cfg) if kind == "bs_roformer"
             else loader._create_mel_band_roformer(model_cfg))
    ckpt = folder / f"{stem}.ckpt"
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    state = model.state_dict()
    if not shrunk:  # half the disk (0.3 and 0.46 GB); the loader upcasts into the model
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, tmp)
    tmp.replace(ckpt)
    # tuples as !!python/tuple, as in the published files (audio-separator reads them with
    # yaml's FullLoader, and the models' type hints want tuples)
    (folder / f"{stem}.yaml").write_text(yaml.dump(cfg, sort_keys=False))
    return ckpt


def write_download_checks(folder):
    """A ``download_checks.json`` listing every ``<name>.ckpt`` + ``<name>.yaml`` in ``folder``,
    so that audio-separator itself (its CLI, its Separator) finds these local models offline
    (VTrace needs none: it lists a folder's checkpoints itself)."""
    import json

    lists = {k: {} for k in ("vr_download_list", "mdx_download_list", "mdx_download_vip_list",
                             "mdx23c_download_list", "mdx23c_download_vip_list",
                             "roformer_download_list", "demucs_download_list")}
    for ckpt in sorted(Path(folder).glob("*.ckpt")):
        lists["roformer_download_list"][f"local: {ckpt.stem}"] = {ckpt.name: f"{ckpt.stem}.yaml"}
    (Path(folder) / "download_checks.json").write_text(json.dumps(lists, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--shrunk", action="store_true", help="one-layer copies (tests)")
    args = parser.parse_args()
    for name in CONFIGS:
        print(write_model(args.out, name, args.shrunk))
    write_download_checks(args.out)


if __name__ == "__main__":
    main()
