"""A uvicorn worker subclass setting the keepalive pings in uvicorn's terms (float seconds,
None for never)."""

from uvicorn_worker import UvicornWorker


class PingWorker(UvicornWorker):
    CONFIG_KWARGS = {"ws_ping_interval": 0.5, "ws_ping_timeout": None}
