"""The web console at ``/console``: server-rendered pages over the same provider methods as the API."""

from opensage.console.api import ConsoleDeps
from opensage.console.routes import create_console

__all__ = ["ConsoleDeps", "create_console"]
