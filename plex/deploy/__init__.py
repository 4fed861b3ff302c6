"""Deploy planning (pure): instance specs, the plan and its waves, probe definitions.

Observing Incus is `plex.backends.incus.observe`; applying a plan is `plex.services.apply`.
"""
