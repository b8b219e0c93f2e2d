"""marsrover: sort Mars rover camera images into Rover (the rover itself) and Surface (terrain)."""

__version__ = "0.1.0"

# The commit of the code this process loads is read now, before any result exists (see provenance).
from . import provenance as _provenance  # noqa: E402,F401
