"""nemo-mlsl: multilingual scaling-law studies (He et al. 2024 family law, ATLAS) on NeMo/Megatron and CPU.

The pure core (families, mixtures, laws, fitting, optimisation, results, reports, study planning)
imports neither NeMo nor Lightning; framework adapters live in the ``mlsl_lightning`` and
``mlsl_nemo`` plugin packages.
"""

__version__ = "0.1.0"
