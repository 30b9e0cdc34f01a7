"""NeMo 2 adapters: recipe builder, family-aware data step, per-family validation loss reduction, CLI factories.

Importing this package does not import NeMo; each module does when used.
"""
