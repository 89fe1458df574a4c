"""Models of the reproduction: CIFAR VGG, CIFAR ResNets, ImageNet ResNets.

Every model takes its normalization by name through ``normmatters.norms.build_norm`` and exposes
``classifier_name`` ("classifier"), the attribute name of its final ``nn.Linear``.
"""
from .init import he_init_
from .registry import MODEL_NAMES, ModelCfg, build_model, check_config

__all__ = ["MODEL_NAMES", "ModelCfg", "build_model", "check_config", "he_init_"]
