"""Production-like settings: DEBUG off, ALLOWED_HOSTS set, the usual middleware, no database at all.

Nothing here is tuned for our server; these are the settings a Django site would deploy behind gunicorn.
"""

from __future__ import annotations

SECRET_KEY = "interop-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

ROOT_URLCONF = "tests.interop.djangosite.urls"
WSGI_APPLICATION = "tests.interop.djangosite.wsgi.application"

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES: dict[str, dict] = {}
TEMPLATES: list[dict] = []

USE_TZ = True
# Django sets the process time zone (os.environ["TZ"]) from this; keep the server's log times in UTC.
TIME_ZONE = "UTC"
USE_I18N = False
DEFAULT_CHARSET = "utf-8"
# Uploads above this size are spooled to a temporary file by Django, as in production.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # 404s are expected in the tests; real errors still reach stderr.
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False}},
}
