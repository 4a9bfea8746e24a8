"""A Django project in one module: settings.configure(), a few views, get_wsgi_application()."""

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="qiao-tests-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse(
        f"Hello from Django, {request.GET.get('name', 'nobody')}", content_type="text/plain"
    )


def api(request, item_id):
    return JsonResponse({"id": item_id, "method": request.method, "path": request.path})


@csrf_exempt
def form(request):
    return JsonResponse({"form": request.POST.dict(), "method": request.method})


def whoami(request):
    """What Django makes of the request's origin (behind a proxy, the proxy's headers
    decide): its own absolute URL, whether the request is secure, the client."""
    return JsonResponse(
        {
            "url": request.build_absolute_uri(),
            "remote_addr": request.META["REMOTE_ADDR"],
            "is_secure": request.is_secure(),
            "host": request.get_host(),
        }
    )


urlpatterns = [
    path("hello/", hello),
    path("whoami/", whoami),
    path("api/<int:item_id>/", api),
    path("form/", form),
]

application = get_wsgi_application()
