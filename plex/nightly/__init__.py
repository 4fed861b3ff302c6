"""The nightly rebuild of the staging plex: bake, redeploy, smoke-check, promote, prune, report.

Modules: channels (stable/latest package layers), smoke (the checks), run (the step list),
report (JSON + self-contained HTML). Importing this package imports none of them.
"""
