"""A Django project with the admin and staticfiles, for `--static` (test_static.py): its
STATIC_ROOT and storage backend come from the environment, so that one module serves
`collectstatic` and the server alike.

QIAO_TEST_STATIC_ROOT: where collectstatic writes; QIAO_TEST_STATIC_STORAGE: the
staticfiles storage class (ManifestStaticFilesStorage, or WhiteNoise's
CompressedManifestStaticFilesStorage).
"""

import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="qiao-tests-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    STATIC_URL="/static/",
    STATIC_ROOT=os.environ.get("QIAO_TEST_STATIC_ROOT", "staticfiles"),
    STORAGES={
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {
            "BACKEND": os.environ.get(
                "QIAO_TEST_STATIC_STORAGE",
                "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
            )
        },
    },
    USE_TZ=True,
)

import django

django.setup()

from django.contrib import admin
from django.core.wsgi import get_wsgi_application
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]

application = get_wsgi_application()
