"""Durable storage behind one seam: ``Store`` (base), SQLite (embedded default) and Redis (several instances)."""
