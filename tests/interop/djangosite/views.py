"""The interop views (see ``tests.interop.common``), written as plain Django views.

The POST views are ``csrf_exempt`` because the tests are API clients without a CSRF token; everything else
(FileResponse, StreamingHttpResponse, request.FILES) is stock Django.
"""

from __future__ import annotations

import json
import os

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from tests.interop.common import (
    STREAM_DEFAULT_CHUNKS,
    UNICODE_DISPOSITION,
    custom_headers,
    digest_stream,
    download_file,
    gated_chunks,
    json_answer,
    multi_dict,
    stream_chunks,
)


def _items(querydict) -> list[tuple[str, str]]:
    return [(key, value) for key, values in querydict.lists() for value in values]


@require_safe
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django!", content_type="text/plain; charset=utf-8")


@require_safe
def greet(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"name": name})


@require_safe
def query(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"args": multi_dict(_items(request.GET))})


@csrf_exempt
@require_POST
def form(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"form": multi_dict(_items(request.POST))})


@csrf_exempt
@require_POST
def json_echo(request: HttpRequest) -> JsonResponse:
    return JsonResponse(json_answer(json.loads(request.body)))


@csrf_exempt
@require_POST
def upload(request: HttpRequest) -> JsonResponse:
    files = {}
    for field, uploads in request.FILES.lists():
        for uploaded in uploads:
            size, sha256 = digest_stream(uploaded.read)
            files[field] = {"filename": uploaded.name, "size": size, "sha256": sha256}
    return JsonResponse({"fields": multi_dict(_items(request.POST)), "files": files})


@csrf_exempt
@require_POST
def echo(request: HttpRequest) -> JsonResponse:
    # Read the stream rather than request.body: a raw body of several MiB is fine here, as it would be
    # for any upload endpoint (request.body is capped by DATA_UPLOAD_MAX_MEMORY_SIZE).
    size, sha256 = digest_stream(request.read)
    return JsonResponse({"size": size, "sha256": sha256})


@require_safe
def set_cookies(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"set": True})
    response.set_cookie("flavour", "oatmeal", httponly=True)
    response.set_cookie("count", "1")
    return response


@require_safe
def cookies(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"cookies": dict(request.COOKIES)})


@require_safe
def go_elsewhere(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect("/query?from=redirect")


@require_safe
def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("n", STREAM_DEFAULT_CHUNKS))
    chunks = stream_chunks(count, request.GET.get("tag"))
    return StreamingHttpResponse(chunks, content_type="text/plain; charset=utf-8")


@require_safe
def download(request: HttpRequest) -> FileResponse:
    path = download_file()
    return FileResponse(path.open("rb"), as_attachment=True, content_type="application/octet-stream")


@require_safe
def headers(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("headers", content_type="text/plain; charset=utf-8")
    for name, value in custom_headers(int(request.GET.get("n", 0))):
        response[name] = value
    return response


@require_safe
def unicode_header(request: HttpRequest) -> HttpResponse:
    return HttpResponse("tea", content_type="text/plain", headers={"Content-Disposition": UNICODE_DISPOSITION})


@require_safe
def wait(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(gated_chunks(request.GET["tag"]), content_type="text/plain; charset=utf-8")


@require_safe
def csrf_token(request: HttpRequest) -> JsonResponse:
    """Django only: hand out a CSRF token (and set the csrftoken cookie), as a form page would."""
    return JsonResponse({"token": get_token(request)})


@require_POST
def protected(request: HttpRequest) -> JsonResponse:
    """Django only: a POST guarded by CsrfViewMiddleware (cookie, token, and on https the Origin check)."""
    return JsonResponse({"form": multi_dict(_items(request.POST)), "secure": request.is_secure()})


@require_safe
def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "framework": "django",
            "pid": os.getpid(),
            "remote_addr": request.META["REMOTE_ADDR"],
            "scheme": request.scheme,
            "host": request.get_host(),
            "url": request.build_absolute_uri(),
        }
    )
