"""ATLAS analyses (Longpre et al. 2025) from a team's own runs: the cross-lingual transfer matrix (``transfer``,
``transfer_study``), the curse of multilinguality (``multilinguality``) and pretrain-vs-finetune (``crossover``)."""
