"""Bake planning (pure): role recipes and their digests, templates, VM templates and seeds.

Running a bake (transient instances, Packer, publishing) is `plex.services.bake` / `bake_vm`.
"""
