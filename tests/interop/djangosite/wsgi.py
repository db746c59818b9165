"""The project's WSGI entry point, as ``django-admin startproject`` writes it: ``...djangosite.wsgi:application``."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.interop.djangosite.settings")

application = get_wsgi_application()
