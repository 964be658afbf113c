"""Configuration, torch-free: the recipe schema and its sections, name lists, units, paths, shipped recipes."""
