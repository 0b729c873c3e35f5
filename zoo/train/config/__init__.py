"""A run's config: the schema Hydra composes and checks (``schema``: dataclasses in Hydra's ConfigStore,
one range check per class, ``validate_config``, ``build_model``) and the keys that change nothing a run
computes, a sweep's jobs and printed commands (``overrides``, no torch)."""
