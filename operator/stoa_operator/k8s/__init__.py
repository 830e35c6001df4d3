"""Kubernetes API adapters: the only place that imports the kubernetes client."""
