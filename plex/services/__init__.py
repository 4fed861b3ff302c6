"""Use cases wiring the pure layers to the backends: bake, images, deploy, registry, nightly."""
