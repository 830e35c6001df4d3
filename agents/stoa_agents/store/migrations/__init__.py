"""Versioned SQL migrations (NNNN_name.sql), applied in order by ``stoa_agents.store.migrate``."""
