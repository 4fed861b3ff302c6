"""Bake: role recipes -> two cached layers -> published, exported, catalogued images."""
