"""A project's own worker class, as some deployments subclass uvicorn's (CONFIG_KWARGS)."""

from uvicorn_worker import UvicornWorker


class ConfigurableWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "asyncio", "lifespan": "off", "root_path": "/mounted",
                     "proxy_headers": True}
