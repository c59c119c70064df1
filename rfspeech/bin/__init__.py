"""Console-script entry points: thin wrappers that parse Hydra overrides and call the library."""
