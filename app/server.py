"""Running the webhook: load profiles, build the app, serve it over HTTPS with uvicorn."""

from __future__ import annotations

import ssl

import uvicorn

from app.logs import configure
from app.profiles import ProfileSet
from app.settings import Settings
from app.web import create_app


class ServeError(Exception):
    """The server cannot start; the message says what to fix."""


def check_tls_files(settings: Settings) -> None:
    if settings.cert_file is None or settings.key_file is None:
        raise ServeError(
            "no serving certificate: set --cert-file/--key-file (SIDECAR_INJECTOR_CERT_FILE/_KEY_FILE); "
            "for development create them with `sidecar-injector certs generate --out certs`"
        )
    for path in (settings.cert_file, settings.key_file):
        if not path.is_file():
            raise ServeError(f"{path}: file not found")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.cert_file, settings.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ServeError(f"{settings.cert_file} / {settings.key_file}: not a usable certificate and key: {exc}") from None


def serve(settings: Settings, profiles: ProfileSet) -> None:
    """Serve /mutate over HTTPS until interrupted."""
    check_tls_files(settings)
    log = configure(settings.log_format, settings.log_level)
    app = create_app(settings, profiles)
    log.info(
        "starting sidecar-injector",
        extra={"address": f"https://{settings.host}:{settings.port}", "profiles": ",".join(profiles.names())},
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert_file),
        ssl_keyfile=str(settings.key_file),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )
