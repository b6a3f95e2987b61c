"""The HTTP layer: one ``APIRouter`` per resource (``routes/``), typed dependencies that
read the app's state (``deps``), request and response schemas, and the error format.

Route and dependency modules leave out ``from __future__ import annotations``: FastAPI
reads their annotations at run time.
"""

from service.api.errors import validation_error
from service.api.routes import ROUTERS
from service.api.routes.profiles import document_k_bound

__all__ = ["ROUTERS", "document_k_bound", "validation_error"]
