"""The REST API: a Jupyter Server extension at ``{base_url}offgrid/v1/`` (OpenAI-style) and
``{base_url}offgrid/api/`` (Ollama-compatible), and ``offgrid serve``.

Enabled on install by ``extension/jupyter_server_config.d/offgrid_nb.json``; Jupyter finds
this module through ``offgrid_nb._jupyter_server_extension_points``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jupyter_server.utils import url_path_join

from . import ollama
from .config import OffgridAPI
from .handlers import routes
from .state import ApiState

if TYPE_CHECKING:
    from jupyter_server.serverapp import ServerApp

NAMESPACE = "offgrid"


def _load_jupyter_server_extension(serverapp: ServerApp) -> None:
    """Mount the ``/v1`` handlers under ``{base_url}offgrid/``."""
    api = ApiState.from_config(OffgridAPI(parent=serverapp))
    web_app = serverapp.web_app
    prefix = url_path_join(web_app.settings["base_url"], NAMESPACE)
    web_app.add_handlers(".*$", routes(prefix, api) + ollama.routes(prefix, api))
    web_app.settings["offgrid_api"] = api  # for tests and other extensions
    serverapp.log.info(
        "offgrid_nb | REST API at %s, Ollama-compatible at %s",
        url_path_join(prefix, "v1/"),
        url_path_join(prefix, "api/"),
    )


__all__ = ["ApiState", "OffgridAPI", "routes"]
