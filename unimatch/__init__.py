"""UniMatch: the backend of a dating platform for university students in Kenya."""

__version__ = "0.1.0"
