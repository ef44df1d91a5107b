"""The separator stage as the engine sees it: one small interface, one factory.

Every backend takes the Config's ``stems`` fields and provides

- ``check_options()``: usage errors (UsageError) before any track runs; a model that cannot be
  loaded raises SeparationError (UnknownModelError for a name that is no model at all);
- ``separate_file(mix_path, out_dir) -> SeparationResult``: writes ``out_dir/vocals.wav`` and
  ``out_dir/no_vocals.wav`` (and the other stems of a multi-stem model, named as Demucs names
  them), float32 at the mix's scale, each through a temporary name;
- ``device_used`` and ``precision_ran``: how the last separation ran (for the manifest);
- ``loaded`` (the model is in memory) and ``sources`` (the model's stems, Demucs' names; loads
  it), for the checks of ``--target-stem`` / ``--stem-gain``; the argument ``all_sources``
  writes every source as ``<source>.wav`` besides the two stems.

Blend, residual, evaluation, resume, manifests, the batch, the web page and cluster workers
see only the stems, so a new backend needs no change there.

``make_separator`` chooses from the ``--model`` value: a name with an extension (.ckpt, .onnx,
.pth, .yaml) runs through python-audio-separator, a bare name through Demucs, and ``A,B`` is an
ensemble of both kinds averaged (processors/ensemble.py).
"""

from utils.layout import is_audio_separator_model, model_names


def make_separator(model, **settings):
    """The separator for ``model`` (the Config's ``model`` value). ``settings``: the other
    ``stems`` fields and ``device``, ``thread``, ``progress``."""
    names = model_names(model)
    if len(names) > 1:
        from processors.ensemble import EnsembleSeparator

        return EnsembleSeparator([_single(n, settings) for n in names])
    return _single(names[0], settings)


def _single(name, settings):
    if is_audio_separator_model(name):
        from processors.audio_separator_backend import AudioSeparatorBackend

        return AudioSeparatorBackend(name, **settings)
    from processors.separation import DemucsSeparator

    return DemucsSeparator(name, **settings)
