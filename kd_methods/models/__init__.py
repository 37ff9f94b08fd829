"""The model zoo: CIFAR networks registered in timm, a name-based factory and hook-based feature taps.

Importing this package registers ``cifar_resnet{8,14,20,26,32,56,110}``, ``cifar_resnet{8,32}x4``,
``cifar_wrn_{16_2,40_2,28_10}``, ``cifar_resnext29_{8,16}x64d``, ``cifar_mobilenet``,
``fitnets_maxout_teacher``, ``fitnet{1,2,3,4}`` and the MNIST ``fitnets_mnist_teacher``/``fitnet_mnist`` in timm, so ``timm.create_model(name, num_classes=...)``
builds them.
"""
from . import cifar_mobilenet, cifar_resnet, cifar_resnext, cifar_wrn, fitnets, fitnets_mnist  # noqa: F401  (registration)
from ._base import uniform_init
from .factory import count_parameters, create_model, input_channels, load_state_file, probe_input_size
from .features import FeatureTap, feature_shapes, stage_points

__all__ = ["create_model", "uniform_init", "input_channels", "probe_input_size", "load_state_file", "count_parameters", "FeatureTap", "stage_points",
           "feature_shapes"]
