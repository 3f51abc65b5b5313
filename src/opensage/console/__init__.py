"""The web console at ``/console``: server-rendered pages over the same provider methods as the API."""

from opensage.console.routes import create_console

__all__ = ["create_console"]
