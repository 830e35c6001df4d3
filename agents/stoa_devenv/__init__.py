"""Real local services for tests and local runs: PostgreSQL, RabbitMQ and a Kubernetes control plane.

Everything here starts private instances on free loopback ports in temporary directories and never
touches a system-wide instance.
"""
