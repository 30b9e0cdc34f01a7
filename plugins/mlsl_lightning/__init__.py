"""Lightning adapters: the family-blend data module, the CPU decoder and the study callbacks."""
