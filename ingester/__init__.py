"""ingester: a SQL mirror of a video-generation provider's jobs, with an audit trail."""

from __future__ import annotations

from .config import Settings, SourceSettings, load_settings
from .errors import IngesterError

__all__ = ["IngesterError", "Settings", "SourceSettings", "load_settings"]
__version__ = "0.1.0"
