"""The tenant-scoped HTTP API (FastAPI): tiered lookups, the event stream, letters, the page.

Every route under /v1/tenants/{tenant} authenticates with `Authorization: Bearer <key>`; a key
is looked up by its sha256 (keys.yaml) and grants one tenant. No key or an unknown key: 401. A
key of another tenant: 404 with the same body as a request that does not exist, so a caller
learns nothing about other tenants' records, not even that they exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sse_starlette import EventSourceResponse

from whylake.api.keys import ApiKeys, KeyGrant
from whylake.api.watcher import EventHub, LakeWatcher
from whylake.lake.catalog import CatalogConfig, ensure_tables, open_catalog
from whylake.lake.opensearch import OpenSearchConfig
from whylake.lake.reconstruct import (
    HISTORY_FIELDS,
    Reconstruction,
    jsonable,
    parse_as_of,
    reconstruct,
)
from whylake.lake.replica import SearchQuery, search
from whylake.lake.reviews import list_reviews, with_reviews
from whylake.schemas.errors import (
    ConfigError,
    InvalidIdError,
    LetterRenderError,
    RecordNotFoundError,
    SnapshotNotFoundError,
)
from whylake.schemas.explanation_policy import ExplanationPolicies
from whylake.schemas.ids import check_request_id, check_tenant
from whylake.views.letter import LetterConfig, html_to_pdf, letter_html
from whylake.views.tiers import TIERS, build_view

Row = dict[str, Any]
NOT_FOUND = "no such explanation"
_STATIC = Path(str(files("whylake.api").joinpath("static")))
# The auditor page loads only its own script and style and talks only to this origin.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass(frozen=True)
class ApiConfig:
    """What `whylake serve` runs with, resolved on the launcher (nothing read from env here)."""

    catalog: CatalogConfig
    keys: ApiKeys
    opensearch: OpenSearchConfig | None = None
    policies: ExplanationPolicies | None = None
    letter: LetterConfig = field(default_factory=LetterConfig)
    poll_s: float = 0.5
    retention_days: int = 30
    queue_size: int = 10_000
    ping_s: float = 15.0

    def __post_init__(self) -> None:
        if self.poll_s <= 0:
            raise ConfigError(f"poll_s must be positive, got {self.poll_s}")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be positive, got {self.queue_size}")


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail=NOT_FOUND)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _grant(
    tenant: str, request: Request, authorization: Annotated[str | None, Header()] = None
) -> KeyGrant:
    """The caller's grant for `tenant`: 401 without a valid key, 404 for another tenant's key."""
    keys: ApiKeys = request.app.state.keys
    grant = keys.grant_for(_bearer(authorization))
    if grant is None:
        raise HTTPException(
            status_code=401,
            detail="give an API key: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if grant.tenant_id != tenant:
        raise _not_found()  # the same answer as a record that does not exist
    return grant


Grant = Annotated[KeyGrant, Depends(_grant)]


def create_app(config: ApiConfig) -> FastAPI:
    """The ASGI application; its lifespan starts and stops the lake watcher."""
    catalog = open_catalog(config.catalog)
    ensure_tables(catalog)
    hub = EventHub(config.queue_size)
    watcher = LakeWatcher(
        catalog,
        hub.publish_threadsafe,
        opensearch=config.opensearch,
        poll_s=config.poll_s,
        retention_days=config.retention_days,
    )
    # One connection per worker thread of the server's thread pool (anyio's default: 40), so
    # concurrent lookups do not open and drop a connection each (urllib3's pool default is 1).
    replica_client = config.opensearch.client(pool_maxsize=40) if config.opensearch else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        watcher.start()
        await asyncio.get_running_loop().run_in_executor(None, watcher.first_tick.wait, 30)
        try:
            yield
        finally:
            watcher.stop()
            if replica_client is not None:
                replica_client.close()

    app = FastAPI(
        title="whylake",
        summary="Tenant-scoped explanations, tiered views, letters and an event stream.",
        lifespan=lifespan,
    )
    app.state.watcher, app.state.hub, app.state.keys = watcher, hub, config.keys

    def lookup(tenant: str, request_id: str, as_of: str | None) -> tuple[Reconstruction, str]:
        try:
            check_tenant(tenant)
            check_request_id(request_id)
        except InvalidIdError as err:
            raise _not_found() from err
        moment = _as_of(as_of)
        state = watcher.state
        if moment is None and replica_client is not None and state.replica_fresh:
            rec = _from_replica(config.opensearch, replica_client, tenant, request_id, state)
            if rec is not None:
                reviews = state.reviews.get((tenant, request_id), [])
                return _attach_reviews(rec, reviews), "replica"
        try:
            rec = reconstruct(catalog, tenant, request_id, as_of=moment)
        except (RecordNotFoundError, SnapshotNotFoundError) as err:
            raise _not_found() from err
        if moment is None:
            return _attach_reviews(rec, state.reviews.get((tenant, request_id), [])), "iceberg"
        return with_reviews(catalog, rec), "iceberg"

    @app.get("/v1/tenants/{tenant}/explanations/stream")
    async def stream(tenant: str, grant: Grant, request: Request) -> EventSourceResponse:
        """Server-sent events: each explanation of this tenant committed from now on."""
        sub = hub.subscribe(grant.tenant_id)

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                ready = {"snapshot_id": watcher.state.snapshot_id, "tenant_id": grant.tenant_id}
                yield {"event": "ready", "data": json.dumps(ready)}
                while True:
                    item = await sub.queue.get()
                    if item is None:
                        yield {"event": "overflow", "data": json.dumps({"reconnect": True})}
                        return
                    yield {
                        "event": "explanation",
                        "id": item.event_id,
                        "data": json.dumps(item.payload, sort_keys=True),
                    }
            finally:
                hub.unsubscribe(sub)

        return EventSourceResponse(events(), ping=config.ping_s)

    @app.get("/v1/tenants/{tenant}/explanations/{request_id}")
    def explanation(
        tenant: str,
        request_id: str,
        grant: Grant,
        tier: Annotated[int, Query(ge=1, le=4)] = 1,
        as_of: Annotated[str | None, Query(description="ISO 8601 time with a zone")] = None,
        lang: str = "en",
        template_version: str | None = None,
    ) -> JSONResponse:
        """One record as a tier's view, from the hot replica when fresh, else from Iceberg."""
        if tier > grant.max_tier:
            raise HTTPException(403, detail=f"this key may read tiers up to {grant.max_tier}")
        rec, source = lookup(tenant, request_id, as_of)
        view = _view(rec, tier, config.policies, lang, template_version)
        body = {
            "tenant_id": rec.tenant_id,
            "request_id": rec.request_id,
            "source": source,
            "snapshot_id": rec.snapshot_id,
            "as_of": as_of,
            **view.to_json(),
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.get("/v1/tenants/{tenant}/explanations/{request_id}/letter")
    def letter(
        tenant: str,
        request_id: str,
        grant: Grant,
        as_of: str | None = None,
        lang: str = "en",
        format: Annotated[str, Query(pattern="^(pdf|html)$")] = "pdf",
        template_version: str | None = None,
    ) -> Response:
        """The explanation letter for the affected person, as PDF (default) or HTML."""
        rec, _ = lookup(tenant, request_id, as_of)
        try:
            page = letter_html(
                rec, policies=config.policies, lang=lang, template_version=template_version
            )
        except ConfigError as err:
            raise HTTPException(400, detail=str(err)) from err
        name = f"letter-{rec.request_id}".replace('"', "")
        headers = {"Cache-Control": "no-store"}
        if format == "html":
            return Response(page, media_type="text/html; charset=utf-8", headers=headers)
        try:
            pdf = html_to_pdf(page, config.letter)
        except LetterRenderError as err:
            raise HTTPException(503, detail=str(err)) from err
        headers["Content-Disposition"] = f'attachment; filename="{name}.pdf"'
        return Response(pdf, media_type="application/pdf", headers=headers)

    @app.get("/v1/tenants/{tenant}/reviews")
    def reviews(tenant: str, grant: Grant, request_id: str | None = None) -> JSONResponse:
        """The tenant's human reviews (optionally of one request), oldest first."""
        if grant.max_tier < 2:
            raise HTTPException(403, detail="reviews need a key for tier 2 or above")
        rows = list_reviews(catalog, tenant, request_id)
        return JSONResponse({"tenant_id": tenant, "reviews": jsonable(rows)})

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, Any]:
        state = watcher.state
        return {
            "ok": True,
            "snapshot_id": state.snapshot_id,
            "replica_fresh": state.replica_fresh,
            "stream_subscribers": hub.subscribers(),
        }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            _STATIC / "auditor.html", headers={"Content-Security-Policy": _PAGE_CSP}
        )

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        allowed = {"auditor.js": "text/javascript", "auditor.css": "text/css"}
        if name not in allowed:
            raise HTTPException(404, detail="not found")
        return FileResponse(_STATIC / name, media_type=allowed[name])

    return app


def _as_of(text: str | None) -> datetime | None:
    if not text:
        return None
    # An unencoded '+' of a zone offset arrives as a space (form encoding): put it back.
    text = re.sub(r" (\d{2}:?\d{2})$", r"+\1", text.strip())
    try:
        return parse_as_of(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ConfigError as err:
        raise HTTPException(400, detail=str(err)) from err


def _view(
    rec: Reconstruction,
    tier: int,
    policies: ExplanationPolicies | None,
    lang: str,
    template_version: str | None,
) -> Any:
    if tier not in TIERS:
        raise HTTPException(400, detail=f"tier must be one of {list(TIERS)}")
    try:
        return build_view(
            rec, tier, policies=policies, lang=lang, template_version=template_version
        )
    except ConfigError as err:
        raise HTTPException(400, detail=str(err)) from err


def _attach_reviews(rec: Reconstruction, reviews: list[Row]) -> Reconstruction:
    latest = {r["explanation_id"]: r for r in reviews}
    history = [
        {
            **h,
            "latest_review": (
                {k: latest[h["explanation_id"]][k] for k in ("decision", "reason", "reviewed_at")}
                if h["explanation_id"] in latest
                else None
            ),
        }
        for h in rec.history
    ]
    return replace(rec, reviews=list(reviews), history=history)


_TIMES = ("event_ts", "explained_at")


def _from_replica(
    config: OpenSearchConfig | None, client: Any, tenant: str, request_id: str, state: Any
) -> Reconstruction | None:
    """The request's documents in the tenant's replica indices, as a reconstruction."""
    assert config is not None
    try:
        hits = search(config, SearchQuery(tenant, request_id=request_id, size=100), client)
    except Exception:  # noqa: BLE001 - the replica is a cache of Iceberg: fall back to it
        return None
    rows = [h for h in hits if h.get("tenant_id") == tenant and h.get("request_id") == request_id]
    if not rows:
        return None
    for row in rows:
        for key in _TIMES:
            if isinstance(row.get(key), str):
                row[key] = datetime.fromisoformat(row[key]).astimezone(UTC)
    rows.sort(key=lambda r: (r["explained_at"], r["explanation_id"]))
    return Reconstruction(
        record=rows[-1],
        snapshot_id=state.snapshot_id,
        snapshot_committed_at=state.committed_at,
        history=[{k: r.get(k) for k in HISTORY_FIELDS} for r in rows],
    )
