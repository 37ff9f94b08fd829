"""kd_methods: reproducible benchmarks for five knowledge-distillation papers.

Importing the package registers the CIFAR models in timm's registry and the methods in
``kd_methods.methods.METHODS``.
"""
__version__ = "0.1.0"
