"""TOML presets shipped with the package (``flowmoe run --preset NAME``)."""
