"""marsrover: sort Mars rover camera images into Rover (the rover itself) and Surface (terrain)."""

__version__ = "0.1.0"
