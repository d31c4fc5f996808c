"""The evaluator's web app: firm list, project pages with SVG charts, exports, and a JSON API.

Read-only by construction: every route is a GET, and every read goes through read-only SQLite
connections (data.py), so neither a page nor the API can alter the store. Pages are rendered on
the server (Jinja2) with inline CSS and inline SVG; there is no script and no external asset, and
the Content-Security-Policy forbids both.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from cloud_ingest.bundle import bundle_files, write_zip
from cloud_ingest.dialect import StoreTarget
from cloud_ingest.evidence import EvidenceReport, Lang, site_zone
from cloud_ingest.projects import Project, UnknownProject
from cloud_ingest.record import PdfUnavailable, render_pdf, write_csv
from cloud_ingest.render import render_html, template_environment
from cloud_ingest.report import ReportError, UnknownAgent
from cloud_ingest.store import GapReport, StoreUnavailable
from cloud_ingest.web import charts
from cloud_ingest.web.auth import REALM, BasicAuth
from cloud_ingest.web.data import (
    STATUS_ORDER,
    Catalog,
    DailySeries,
    ProjectSummary,
    StateRow,
    daily_series,
    project_reports,
    project_summary,
    state_intervals,
)
from cloud_ingest.web.text import LANG_COOKIE, TEXT, age_text
from edgeproof import __version__

log = logging.getLogger(__name__)

SortKey = Literal[
    "firm", "credit_code", "provider", "networking_rate", "nc_rate_key_processes", "oee", "freshness", "status"
]
EXPORTS = {
    "evidence.zh-CN.html": "text/html; charset=utf-8",
    "evidence.en.html": "text/html; charset=utf-8",
    "evidence.zh-CN.pdf": "application/pdf",
    "evidence.en.pdf": "application/pdf",
    "evidence.csv.zip": "application/zip",
    "evidence.json": "application/json",
}
SECURITY_HEADERS = {
    # no script may run and nothing may load from elsewhere: styles are inline, charts are inline SVG
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_PER_PAGE = 200


# query and path parameters (module level: routes resolve their annotations here)
Sort = Annotated[SortKey, Query(description="column to sort by; indicators by their worst agent's post value")]
Order = Annotated[Literal["asc", "desc"], Query()]
PageNo = Annotated[int, Query(ge=1)]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]
ProjectId = Annotated[str, PathParam(description="retrofit project id")]


class ProjectPage(BaseModel):
    total: int
    page: int
    per_page: int
    pages: int
    sort: SortKey
    order: Literal["asc", "desc"]
    items: list[ProjectSummary]


class ProjectDetail(BaseModel):
    project: Project
    summary: ProjectSummary


def pick_lang(request: Request) -> Lang:
    """?lang= (zh, zh-CN, en), else the cookie, else Chinese."""
    wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or "zh-CN"
    return "en" if wanted.lower().startswith("en") else "zh-CN"


def _post_key(s: ProjectSummary, key: str) -> float | None:
    """A project's sort value of an indicator: its worst agent's post value (agents are never combined)."""
    values = [getattr(a, key).post for a in s.agents]
    return None if any(v is None for v in values) else min(v for v in values if v is not None)


def sort_summaries(items: list[ProjectSummary], sort: SortKey, order: str) -> list[ProjectSummary]:
    reverse = order == "desc"

    def text_key(s: ProjectSummary) -> str:
        return {"firm": s.firm_name, "credit_code": s.credit_code, "provider": s.provider}[sort]

    if sort in ("firm", "credit_code", "provider"):
        return sorted(items, key=lambda s: (text_key(s), s.project_id), reverse=reverse)
    if sort == "status":
        return sorted(items, key=lambda s: (STATUS_ORDER.index(s.status), s.project_id), reverse=reverse)
    values = {s.project_id: (s.age_s if sort == "freshness" else _post_key(s, sort)) for s in items}
    known = sorted(
        (s for s in items if values[s.project_id] is not None), key=lambda s: values[s.project_id], reverse=reverse
    )
    return known + [s for s in items if values[s.project_id] is None]  # no value: always last


def _attachment(name: str) -> str:
    return f"attachment; filename*=UTF-8''{quote(name)}"


def create_app(db_path: StoreTarget, *, auth: bool = True, cache_s: float = 30.0) -> FastAPI:
    """The app over the store at `db_path`; with auth, every request needs an account of `edgeproof user`."""
    catalog = Catalog(db_path, max_age_s=cache_s)
    guard = BasicAuth(db_path) if auth else None
    env = template_environment("templates/web")
    env.filters.update(pct=charts.pct)
    app = FastAPI(
        title="edgeproof evidence API",
        version=__version__,
        description="Read-only access to the retrofit evidence records of the ingest's store (docs/web.md). "
        "Every route is GET; HTTP Basic authentication.",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: /docs is rendered here instead
        redoc_url=None,
    )

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        if guard is not None:
            client = request.client.host if request.client else "?"
            user = await run_in_threadpool(guard.check, request.headers.get("authorization"), client)
            if user is None:
                t = TEXT[pick_lang(request)]
                return Response(
                    f"401 {t['login_needed']} / Login required\n",
                    status_code=401,
                    headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"', **SECURITY_HEADERS},
                    media_type="text/plain; charset=utf-8",
                )
        response: Response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        wanted = request.query_params.get("lang")
        if wanted:
            response.set_cookie(LANG_COOKIE, pick_lang(request), max_age=365 * 86400, httponly=True, samesite="lax")
        return response

    @app.exception_handler(UnknownProject)
    async def _unknown(request: Request, exc: UnknownProject) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> Response:
        return _error(request, 503, str(exc))

    def _error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=status)
        t = TEXT[pick_lang(request)]
        html = env.get_template("error.html.j2").render(
            t=t, lang=pick_lang(request), status=status, message=message, path="/"
        )
        return HTMLResponse(html, status_code=status)

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        lang = pick_lang(request)
        return HTMLResponse(env.get_template(name).render(t=TEXT[lang], lang=lang, path=request.url.path, **context))

    def agent_of(project: Project, agent_id: str) -> str:
        if agent_id not in project.agents:
            raise HTTPException(404, f"agent {agent_id!r} is not an agent of project {project.id!r}")
        return agent_id

    def listing(sort: SortKey, order: str, page_no: int, per_page: int) -> ProjectPage:
        with catalog.store() as store:
            items = sort_summaries(catalog.summaries(store), sort, order)
        pages = max(1, math.ceil(len(items) / per_page))
        page_no = min(page_no, pages)
        return ProjectPage(
            total=len(items),
            page=page_no,
            per_page=per_page,
            pages=pages,
            sort=sort,
            order="desc" if order == "desc" else "asc",
            items=items[(page_no - 1) * per_page : page_no * per_page],
        )

    # -- pages ---------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(
        request: Request,
        sort: Sort = "firm",
        order: Order = "asc",
        page_no: Annotated[int, Query(ge=1, alias="page")] = 1,
        per_page: PerPage = 50,
    ) -> HTMLResponse:
        started = time.perf_counter()
        result = listing(sort, order, page_no, per_page)
        t = TEXT[pick_lang(request)]

        def link(**changes: object) -> str:
            params = {"sort": sort, "order": order, "page": result.page, "per_page": per_page} | changes
            return "/?" + urlencode(params)

        def sort_link(key: str) -> str:
            return link(sort=key, order="desc" if (sort == key and order == "asc") else "asc", page=1)

        response = page(
            request, "index.html.j2", r=result, link=link, sort_link=sort_link, age=lambda s: age_text(s, t)
        )
        log.info(
            "firm list rendered firms=%d page=%d ms=%.1f",
            result.total,
            result.page,
            (time.perf_counter() - started) * 1e3,
        )
        return response

    @app.get("/projects/{project_id}", response_class=HTMLResponse, include_in_schema=False)
    def project_page(request: Request, project_id: ProjectId) -> HTMLResponse:
        t = TEXT[pick_lang(request)]
        with catalog.store() as store:
            project = catalog.project(store, project_id)
            records = catalog.records(store, project)
            summary = project_summary(store, project, records)
            agents = []
            for agent_id in project.agents:
                record = records[agent_id]
                item: dict[str, Any] = {
                    "id": agent_id,
                    "record": record,
                    "summary": next(a for a in summary.agents if a.agent_id == agent_id),
                }
                if isinstance(record, EvidenceReport):
                    zone = site_zone(record.site.timezone if record.site else None)
                    series = daily_series(store, agent_id, None, None)
                    machines = [m.machine_id for m in record.machines]
                    timelines = {}
                    for window in ("baseline", "post"):
                        w = getattr(record, window)
                        intervals = state_intervals(store, agent_id, w.start, w.end)
                        names = machines + sorted({i.machine_id for i in intervals} - set(machines))
                        timelines[window] = charts.timeline_chart(names, intervals, w.start, w.end, zone, t, window)
                    item |= {
                        "series": series,
                        "series_chart": charts.series_chart(series.days, t) if series.days else None,
                        "oee_chart": charts.oee_chart(record.machines, t),
                        "coverage_chart": charts.coverage_chart(record.machines, t),
                        "timelines": timelines,
                        "gaps": store.gap_report(agent_id),
                    }
                    item["gaps_chart"] = charts.gaps_chart(item["gaps"], t)
                agents.append(item)
        return page(
            request,
            "project.html.j2",
            p=project,
            s=summary,
            agents=agents,
            age=lambda s: age_text(s, t),
            exports=EXPORTS,
        )

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        spec = app.openapi()
        routes = [
            {
                "path": path,
                "summary": op.get("summary", ""),
                "description": op.get("description", ""),
                "parameters": op.get("parameters", []),
            }
            for path, methods in spec["paths"].items()
            for op in (methods["get"],)
        ]
        return page(request, "docs.html.j2", spec=spec, routes=routes)

    # -- exports (never cached: the same record `edgeproof report --project` writes) -------------

    def fresh_record(project: Project, agent_id: str) -> EvidenceReport:
        with catalog.store() as store:
            record = project_reports(store, project)[agent_id]
        if isinstance(record, str):
            raise HTTPException(409, f"no record for agent {agent_id!r}: {record}")
        return record

    @app.get(
        "/projects/{project_id}/agents/{agent_id}/export/{filename}",
        summary="The evidence record of one agent as a file",
        description="evidence.zh-CN.html, evidence.en.html, evidence.zh-CN.pdf, evidence.en.pdf, evidence.csv.zip "
        "(the CSV tables of `edgeproof report`) or evidence.json. PDF needs WeasyPrint's Pango: 503 without it.",
        responses={200: {"content": {m: {} for m in set(EXPORTS.values())}}, 503: {"description": "PDF unavailable"}},
        tags=["exports"],
    )
    def export_record(project_id: ProjectId, agent_id: str, filename: str) -> Response:
        if filename not in EXPORTS:
            raise HTTPException(404, f"no export {filename!r}; one of {', '.join(EXPORTS)}")
        with catalog.store() as store:
            project = catalog.project(store, project_id)
        record = fresh_record(project, agent_of(project, agent_id))
        if filename.endswith(".html"):
            body: bytes = render_html(record, filename.split(".")[1]).encode("utf-8")  # type: ignore[arg-type]
        elif filename.endswith(".pdf"):
            try:
                body = render_pdf(record, filename.split(".")[1])  # type: ignore[arg-type]
            except PdfUnavailable as exc:
                log.warning("pdf export unavailable project=%s agent=%s: %s", project_id, agent_id, exc)
                return Response(
                    f"503 PDF unavailable: {exc}\n", status_code=503, media_type="text/plain; charset=utf-8"
                )
        elif filename.endswith(".zip"):
            with tempfile.TemporaryDirectory(prefix="edgeproof-csv-") as tmp:
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
                    for path in write_csv(record, tmp):
                        z.write(path, path.name)
                body = buffer.getvalue()
        else:
            body = (record.model_dump_json(indent=2) + "\n").encode("utf-8")
        log.info("export project=%s agent=%s file=%s bytes=%d", project_id, agent_id, filename, len(body))
        return Response(
            body,
            media_type=EXPORTS[filename],
            headers={"Content-Disposition": _attachment(f"{project_id}-{agent_id}-{filename}")},
        )

    @app.get(
        "/projects/{project_id}/export/bundle.zip",
        summary="The project's evidence bundle (as `edgeproof export`)",
        description="Records, signed messages and enrolled keys, verifiable offline with `edgeproof verify`.",
        responses={200: {"content": {"application/zip": {}}}, 409: {"description": "an agent has no data"}},
        tags=["exports"],
    )
    def export_bundle(project_id: ProjectId) -> Response:
        with catalog.store() as store:
            project = catalog.project(store, project_id)
        try:
            files = bundle_files(catalog.db_path, project)
        except (ReportError, UnknownAgent) as exc:
            raise HTTPException(409, f"project {project_id}: {exc}") from None
        with tempfile.TemporaryDirectory(prefix="edgeproof-bundle-") as tmp:
            body = write_zip(files, Path(tmp) / "bundle.zip").read_bytes()
        log.info("export bundle project=%s bytes=%d", project_id, len(body))
        return Response(
            body, media_type="application/zip", headers={"Content-Disposition": _attachment(f"{project_id}.zip")}
        )

    # -- JSON API --------------------------------------------------------------------------------

    @app.get(
        "/api/v1/projects",
        response_model=ProjectPage,
        summary="Retrofit projects with their summary numbers",
        tags=["api"],
    )
    def api_projects(
        sort: Sort = "firm", order: Order = "asc", page: PageNo = 1, per_page: PerPage = 50
    ) -> ProjectPage:
        return listing(sort, order, page, per_page)

    @app.get(
        "/api/v1/projects/{project_id}",
        response_model=ProjectDetail,
        summary="One project and its summary",
        tags=["api"],
    )
    def api_project(project_id: ProjectId) -> ProjectDetail:
        with catalog.store() as store:
            project = catalog.project(store, project_id)
            return ProjectDetail(
                project=project, summary=project_summary(store, project, catalog.records(store, project))
            )

    @app.get(
        "/api/v1/projects/{project_id}/records",
        response_model=list[EvidenceReport],
        summary="The project's evidence records, one per agent with data (EvidenceReport)",
        tags=["api"],
    )
    def api_records(project_id: ProjectId) -> list[EvidenceReport]:
        with catalog.store() as store:
            project = catalog.project(store, project_id)
            records = catalog.records(store, project)
        return [r for r in records.values() if isinstance(r, EvidenceReport)]

    @app.get(
        "/api/v1/projects/{project_id}/agents/{agent_id}/series",
        response_model=DailySeries,
        summary="Daily networking rate and OEE from the stored KPI buckets (summed, then divided)",
        tags=["api"],
    )
    def api_series(project_id: ProjectId, agent_id: str) -> DailySeries:
        with catalog.store() as store:
            project = catalog.project(store, project_id)
            return daily_series(store, agent_of(project, agent_id), None, None)

    @app.get(
        "/api/v1/projects/{project_id}/agents/{agent_id}/states",
        response_model=list[StateRow],
        summary="Stored machine state intervals in a window, clipped to it",
        tags=["api"],
    )
    def api_states(
        project_id: ProjectId, agent_id: str, window: Literal["baseline", "post"] = "post"
    ) -> list[StateRow]:
        with catalog.store() as store:
            project = catalog.project(store, project_id)
            w = getattr(project, window)
            return state_intervals(store, agent_of(project, agent_id), w.start, w.end)

    @app.get(
        "/api/v1/projects/{project_id}/agents/{agent_id}/gaps",
        response_model=GapReport,
        summary="The agent's sequence gaps: declared evicted, missing, held",
        tags=["api"],
    )
    def api_gaps(project_id: ProjectId, agent_id: str) -> GapReport:
        with catalog.store() as store:
            project = catalog.project(store, project_id)
            return store.gap_report(agent_of(project, agent_id))

    app.state.catalog = catalog
    return app


__all__ = ["create_app", "pick_lang", "sort_summaries"]
