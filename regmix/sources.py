"""Where documents come from. (Owned by the data stage; see DESIGN.md.)"""

from __future__ import annotations


def check_source_config(config: dict) -> None:
    """Validate `data.source` against `domains`; raise ConfigError naming the key."""
    return None
