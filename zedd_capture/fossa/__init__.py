"""FOSSA depth-from-focus network, checkpoint-compatible with the published fossa-vits / fossa-vitb."""
from .checkpoint import encoder_of_model_name, load_fossa, read_state_dict, resolve_checkpoint, torch_device
from .config import CONFIGS, IMAGENET_MEAN, IMAGENET_STD, FossaConfig, get_config
from .model import FossaModel, build_fossa, network_size

__all__ = [
    "CONFIGS", "IMAGENET_MEAN", "IMAGENET_STD", "FossaConfig", "FossaModel", "build_fossa",
    "encoder_of_model_name", "get_config", "load_fossa", "network_size", "read_state_dict",
    "resolve_checkpoint", "torch_device",
]
