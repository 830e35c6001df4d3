"""Postgres state of the runtime (asyncpg); SQL schema in versioned ``migrations/*.sql``."""
