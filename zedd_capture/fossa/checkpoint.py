"""Loading the published FOSSA checkpoints (``model.pth``) and finding them offline."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from .config import CONFIGS, get_config
from .model import FossaModel

HF_REPOS: dict[str, str] = {"fossa-vits": "venkatsubra/fossa-vits", "fossa-vitb": "venkatsubra/fossa-vitb"}
HF_FILENAME = "model.pth"


def encoder_of_model_name(name: str) -> str:
    """'fossa-vits' -> 'vits', 'fossa-vitb' -> 'vitb'."""
    if name not in HF_REPOS:
        raise ValueError(f"unknown FOSSA model {name!r}; expected one of {sorted(HF_REPOS)}")
    return name.split("-", 1)[1]


def _default_hub_cache() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "~/.cache/huggingface/hub"
    return str(constants.HF_HUB_CACHE)


def resolve_checkpoint(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Path of a checkpoint given a file path or a released model name, without network access.

    'fossa-vits' / 'fossa-vitb' resolve through the local huggingface_hub cache
    (repo venkatsubra/fossa-vit{s,b}, file model.pth). Raises FileNotFoundError saying where to
    put model.pth when it is not there. ``cache_dir`` overrides the hub cache (default: HF_HUB_CACHE).
    """
    text = str(name_or_path)
    if text not in HF_REPOS:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"FOSSA checkpoint {path} does not exist (or is not a file); "
                                    f"pass a model.pth path or one of {sorted(HF_REPOS)}")
        return path
    repo = HF_REPOS[text]
    where = Path(cache_dir) if cache_dir is not None else _default_hub_cache()
    hint = (f"put it in the Hugging Face cache ({where}) with `hf download {repo} {HF_FILENAME}` on a "
            f"machine with network access (HF_HOME / HF_HUB_CACHE choose the cache), or download "
            f"https://huggingface.co/{repo}/resolve/main/{HF_FILENAME} and pass its path with --checkpoint")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise FileNotFoundError(f"{text}: huggingface_hub is not installed, so the cache cannot be "
                                f"searched; download {HF_FILENAME} and pass --checkpoint PATH ({hint})") from None
    try:
        return Path(hf_hub_download(repo_id=repo, filename=HF_FILENAME, cache_dir=cache_dir, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, offline mode errors, broken cache entries
        raise FileNotFoundError(f"{text}: {HF_FILENAME} of {repo} is not in the local Hugging Face "
                                f"cache ({type(exc).__name__}); {hint}") from None


def _load_failure(exc: Exception) -> str:
    """Why torch.load(weights_only=True) failed, in one line (without torch's advice to load pickled code)."""
    text = str(exc)
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    unpickler = re.search(r"WeightsUnpickler error:\s*(.*)", text)
    if unpickler:
        detail = unpickler.group(1).strip()
        glob = re.match(r"Unsupported global: GLOBAL (\S+)", detail)
        if glob:
            return f"it holds Python objects besides tensors ({glob.group(1)}), which are never loaded"
        return f"not a torch zip archive or tensor pickle ({detail.splitlines()[0][:120] if detail else 'unknown format'})"
    if "central directory" in text or "PytorchStreamReader" in text or "zip archive" in text:
        return "not a complete torch zip archive (corrupt or truncated)"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    if "weights_only" in first:
        first = ""
    return "corrupt, or not a torch checkpoint" + (f" ({first})" if first else "")


def _describe(obj) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty mapping"
        inner = obj.get("model", obj)
        if isinstance(inner, dict):
            bad = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
            if bad:
                return f"a mapping whose entry {str(bad[0])[:60]!r} is of type {type(inner[bad[0]]).__name__}, not a tensor"
            return "an empty mapping" if not inner else "a mapping"
        return f"'model' holding a {type(inner).__name__}"
    return f"a {type(obj).__name__}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: ``['model']`` (or the top level), leading ``module.`` removed."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never pickled code
    except Exception as exc:
        raise ValueError(f"{path}: not a FOSSA checkpoint, cannot be read: {_load_failure(exc)}") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a FOSSA checkpoint: expected {{'model': {{name: tensor}}}} or {{name: tensor}}, "
                         f"got {_describe(obj)}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_strict(model: FossaModel, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """``model.load_state_dict(state, strict=True)`` with an error that names ``source``."""
    width = state.get("pretrained.cls_token")
    if width is not None and width.shape[-1] != model.cfg.embed_dim:
        other = [k for k, c in CONFIGS.items() if c.embed_dim == width.shape[-1]]
        raise ValueError(f"{source}: embedding width {width.shape[-1]} does not match encoder "
                         f"{model.cfg.encoder!r} ({model.cfg.embed_dim}); encoder={other[0]!r}?"
                         if other else f"{source}: unknown embedding width {width.shape[-1]}")
    expected = model.state_dict()
    if state and not set(state) & set(expected):
        raise ValueError(f"{source}: not a FOSSA checkpoint: none of its {len(state)} tensors "
                         f"({', '.join(sorted(state)[:3])}{', ...' if len(state) > 3 else ''}) is a FOSSA parameter")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        problems = [f"{label} {len(items)}: {head(items)}" for label, items in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
        raise ValueError(f"{source}: does not match the FOSSA-{model.cfg.encoder} parameters; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` ('auto', 'cpu', 'cuda', 'cuda:1', ...) as a torch.device, checked before any weights load;
    'auto' is the first CUDA GPU when torch sees one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device (expected auto, cpu, cuda or cuda:<index>)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"device {device!r}: torch {torch.__version__} ({build}) sees no CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: FOSSA runs on cpu or cuda")
    return dev


def load_fossa(checkpoint_path: str | Path, encoder: str = "vits", device: str | torch.device = "cpu") -> FossaModel:
    """FOSSA with the weights of ``checkpoint_path`` (a path or 'fossa-vits' / 'fossa-vitb'), in eval mode."""
    device = torch_device(device)
    path = resolve_checkpoint(checkpoint_path)
    model = FossaModel(get_config(encoder))
    load_state_dict_strict(model, read_state_dict(path), str(path))
    return model.to(device).eval()
