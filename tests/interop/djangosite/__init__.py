"""A tiny but real Django project (settings, URLconf, views, wsgi.py) serving the interop routes."""
