"""Gunicorn's `gunicorn.app` for ferrocorn: the embedding API (`ferrocorn.app.base`)."""
