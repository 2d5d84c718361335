"""sasr on Ray Serve: many replicas behind one address.

Each replica is the whole sasr server (its own engine and model on its GPU or CPU share, the same
Litestar app as `sasr serve`), built inside the replica as a Ray Serve ingress deployment. Ray routes
requests and WebSocket sessions to replicas (a session stays on its replica for its life), scales them
on ongoing requests (a session counts as one while it lasts), restarts the ones that die or fail their
health check, and drains the ones it stops.

    serve run deploy/ray/serve.yaml            # make serve-cluster; `serve deploy` for a running cluster
    serve run sasr.ray_serve:app model=openai/whisper-small max_sessions=16

The application's `args` are `sasr serve`'s settings (ServerConfig fields; host and port are Ray's).
Ray is an optional extra (`pip install 'sasr[ray]'`); nothing else in sasr imports this module.
"""

from __future__ import annotations

import msgspec
from ray import serve
from ray.serve import Application

from sasr.config import ServerConfig
from sasr.server.app import app_for

HEALTH_CHECK_PERIOD_S = 5.0


@serve.deployment(name="sasr", health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=30.0)
@serve.ingress()
class SasrReplica:
    """One sasr server; Ray calls check_health every few seconds and restarts the replica when it raises."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def __serve_build_asgi_app__(self):
        self.server = app_for(self.config)  # loads the model
        return self.server

    def check_health(self) -> None:
        failure = self.server.state.engine.failure
        if failure is not None:
            raise RuntimeError(f"sasr engine failed: {failure}")


def settings(args: dict) -> ServerConfig:
    """The application's args as sasr settings: typed (`serve run` passes key=value strings), unknown
    names refused."""
    unknown = set(args) - set(ServerConfig.__struct_fields__)
    if unknown:
        raise ValueError(f"unknown sasr settings: {sorted(unknown)}")
    return msgspec.convert(args, ServerConfig, strict=False)


def app(args: dict) -> Application:
    """The application `serve run` and `serve deploy` import (import_path: sasr.ray_serve:app).

    A replica admits as many ongoing requests as it holds: its live sessions and queued uploads (Ray's
    router sends no more; sasr's own too_many_sessions and 503 stay the backstop). A config file's
    deployment options override these."""
    config = settings(args)
    return SasrReplica.options(
        max_ongoing_requests=config.max_sessions + config.max_queued_requests,
        graceful_shutdown_timeout_s=config.shutdown_timeout,
    ).bind(config)
