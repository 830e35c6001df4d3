"""Pure builders: desired manifests of the children of Stoa's resources (no I/O, no clock, no env)."""
