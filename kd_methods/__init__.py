"""kd_methods: reproducible benchmarks for five knowledge-distillation papers.

`import kd_methods.models` registers the CIFAR models in timm's registry; `import kd_methods.methods`
registers every method in `kd_methods.methods.METHODS`.
"""
__version__ = "0.1.0"
