import os

from hypothesis import settings

# CI runs every example set derandomized, so a green run is reproducible.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
