"""The Demucs models VTrace can run, and fetching one into a folder for ``--model-repo``.

demucs 4.1 loads a named model from the Hugging Face hub first (``adefossez/<repo>``: the bag's
``<name>.yaml`` and one ``<signature>.safetensors`` per sub-model, cached under
``~/.cache/huggingface/hub``), then from its legacy download host (``<signature>-<checksum>.th``
files, cached under torch hub's ``checkpoints``). With ``--model-repo DIR`` it reads only DIR:
``<name>.yaml`` and the ``.th`` files it names. ``fetch_model`` writes exactly that layout, so
a machine without network can run the model from the folder.
"""

import hashlib
import logging
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from utils.atomic_files import atomic_path
from utils.errors import SeparationError, UsageError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20

# The sources of the models demucs 4.1 knows by name. They are stored in the weights, so they
# are written here to check --target-stem / --stem-gain before any track runs, without loading
# (or downloading) a model; tests/test_stems.py checks demucs_unittest's against the loaded one.
_FOUR = ("drums", "bass", "other", "vocals")
MODEL_SOURCES = {**{name: _FOUR for name in (
    "htdemucs", "htdemucs_ft", "hdemucs_mmi", "mdx", "mdx_extra", "mdx_q", "mdx_extra_q",
    "repro_mdx_a", "repro_mdx_a_hybrid_only", "repro_mdx_a_time_only", "demucs_unittest")},
    "htdemucs_6s": _FOUR + ("guitar", "piano")}


@dataclass(frozen=True)
class ModelFile:
    name: str  # as it goes into the model folder: "<signature>-<checksum>.th"
    url: str

    @property
    def checksum(self):
        stem = Path(self.name).stem
        return stem.rsplit("-", 1)[1] if "-" in stem else None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    signatures: tuple
    files: tuple           # ModelFile per sub-model
    yaml: Path             # the bag definition shipped with demucs
    hf_repo: str           # where demucs looks first
    hf_files: tuple


def known_models():
    """``{name: ModelInfo}`` of the models demucs 4.1 knows by name (its remote/*.yaml bags)."""
    import yaml
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from demucs.pretrained import REMOTE_ROOT, ROOT_URL

    urls = _remote_files(REMOTE_ROOT / "files.txt", ROOT_URL)
    found = {}
    for spec in sorted(Path(REMOTE_ROOT).glob("*.yaml")):
        sigs = tuple(yaml.safe_load(spec.read_text())["models"])
        files = tuple(ModelFile(urls[s].rsplit("/", 1)[1], urls[s]) for s in sigs if s in urls)
        found[spec.stem] = ModelInfo(
            spec.stem, sigs, files, spec, f"{DEFAULT_NAMESPACE}/{hf_repo_name(spec.stem)}",
            (f"{spec.stem}.yaml",) + tuple(f"{s}.safetensors" for s in dict.fromkeys(sigs)))
    return found


def _remote_files(listing, root_url):
    """demucs' files.txt: ``{signature: url}``."""
    urls, root = {}, ""
    for line in Path(listing).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
        else:
            urls[line.split("-", 1)[0]] = root_url + root + line
    return urls


def describe_models(models=None):
    """Lines for ``--list-models``: each model, its files, and where they go."""
    models = known_models() if models is None else models
    lines = ["Demucs models (run: vtrace SONGS --model NAME; offline: "
             "vtrace --fetch-model NAME --model-repo DIR, then --model-repo DIR):"]
    for info in models.values():
        unique = list(dict.fromkeys(f.name for f in info.files))
        lines.append(f"  {info.name}: {len(set(info.signatures))} sub-model(s); "
                     f"Hugging Face {info.hf_repo} ({', '.join(info.hf_files)}); "
                     f"for --model-repo: {info.name}.yaml + {', '.join(unique)}")
    lines.append("  demucs_unittest: a tiny random model built in code (no download; output is "
                 "noise, for trying the pipeline)")
    return lines


def fetch_model(name, dest, models=None, opener=urllib.request.urlopen):
    """Download model ``name``'s files into ``dest`` for ``--model-repo`` (files already there
    with the right checksum are kept). Returns ``[(file name, bytes)]``.

    Raises UsageError for an unknown name, SeparationError when a download fails or its
    checksum is wrong (nothing half-written is left)."""
    models = known_models() if models is None else models
    if name not in models:
        raise UsageError(f"fetch_model={name}: not a known Demucs model; use one of "
                         f"{', '.join(models)}")
    info = models[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for f in dict.fromkeys(info.files):
        target = dest / f.name
        if not (target.is_file() and _checksum_ok(target, f.checksum)):
            log.info("downloading %s", f.url)
            try:
                with opener(f.url, timeout=60) as response, atomic_path(target) as tmp:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(response, out, _CHUNK)
                    if not _checksum_ok(tmp, f.checksum):
                        raise SeparationError(f"{f.url}: checksum mismatch (expected "
                                              f"{f.checksum}); the download is damaged, run "
                                              "again")
            except OSError as exc:
                raise SeparationError(f"cannot download {f.url}: {exc}; check the network, "
                                      "or copy the file into the folder by hand") from None
        done.append((f.name, target.stat().st_size))
    shutil.copyfile(info.yaml, dest / f"{name}.yaml")
    done.append((f"{name}.yaml", (dest / f"{name}.yaml").stat().st_size))
    return done


def _checksum_ok(path, checksum):
    """demucs' own check: the file's SHA-256 starts with the checksum in its name."""
    if not checksum:
        return True
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest().startswith(checksum)


def _size(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def fetch_report(name, dest, done):
    """Lines telling what was fetched, how big, and how to use it."""
    total = sum(n for _, n in done)
    lines = [f"{name}: {len(done)} file(s), {_size(total)} in {os.path.abspath(dest)}:"]
    lines += [f"  {file}  {_size(n)}" for file, n in done]
    lines.append(f"run offline with: vtrace SONGS --model {name} --model-repo {dest}")
    return lines
