"""Local mode: ``stoa run`` and ``stoa transcript`` on one machine, with real services."""
