"""Training: tables and demo data -> LightGBM model versions in the registry."""
