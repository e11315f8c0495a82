"""Members in the head-office API: create, read, change, search, birthdays, merge, codes, Excel.

Reading needs `members.read` (every role), changing `members.write` (owner, regional,
store manager, marketing). A store-scoped user sees and changes only members whose
source store is one of theirs; any other member answers 404, as if it did not exist.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from hub.api import DB, ProblemError, principal, query_int, read_body
from hub.auth import Principal
from hub.errors import NotFound
from hub.member_codes import issue_code
from hub.member_io import XLSX, BadMemberFile, export_members, import_members
from hub.member_schemas import (
    BirthdayItem,
    BirthdayPage,
    MemberCodeOut,
    MemberIn,
    MemberOut,
    MemberPage,
    MemberPatch,
    MergeIn,
)
from hub.member_search import (
    MAX_BIRTHDAY_DAYS,
    MemberQuery,
    UnknownLevel,
    UnknownTag,
    birthdays,
    search_members,
)
from hub.members import (
    Member,
    MemberFields,
    create_member,
    get_member,
    merge_members,
    parse_gender,
    update_member,
)
from protocol import FieldError, Problem

__all__ = ["add_routes"]

MAX_PAGE = 500
MAX_UPLOAD = 20 * 1024 * 1024  # ~200,000 rows of a plain member sheet
# Head office works in China time unless it says otherwise with `from=`.
_OFFICE_TZ = ZoneInfo("Asia/Shanghai")


def _out(member: Member, status: int = 200) -> web.Response:
    return web.json_response(text=MemberOut.model_validate(member).model_dump_json(), status=status)


def _bad(detail: str, status: int = 400) -> ProblemError:
    return ProblemError(
        Problem(title="Bad query" if status == 400 else "Request is invalid", status=status, detail=detail)
    )


def _visible(who: Principal, member: Member) -> bool:
    return who.stores is None or (member.source_store is not None and member.source_store in who.stores)


async def _member(request: web.Request, member_id: str, permission: str) -> Member:
    """The member (not following a merge), if the caller may act on it."""
    who = principal(request)
    who.require(permission)
    async with request.app[DB].session() as session:
        member = await get_member(session, member_id, follow_merge=False)
    if not _visible(who, member):
        raise NotFound(f"no member {member_id!r}")
    return member


def _query(request: web.Request, who: Principal) -> MemberQuery:
    try:
        return MemberQuery(
            phone=request.query.get("phone") or None,
            name=request.query.get("name") or None,
            level=request.query.get("level") or None,
            tag=request.query.get("tag") or None,
            segment=request.query.get("segment") or None,
            include_merged=request.query.get("include_merged", "false").lower() in {"1", "true", "yes"},
            stores=who.stores,
        )
    except ValueError as err:
        raise _bad(str(err)) from None


async def create(request: web.Request) -> web.Response:
    """`POST /api/v1/members`: 201 the member; 409 if the phone is taken."""
    who = principal(request)
    body = await read_body(request, MemberIn)
    store = body.source_store
    if store is None and who.stores is not None and len(who.stores) == 1:
        store = next(iter(who.stores))
    if store is None and who.stores is not None:
        raise _bad("source_store: give one of your stores", 422)
    who.require("members.write", store=store)
    fields = MemberFields(
        body.phone,
        channel="hub",
        name=body.name,
        gender=parse_gender(body.gender),
        birthday=body.birthday,
        source_store=store,
        referrer_id=body.referrer_id,
        consent_marketing=body.consent_marketing,
        consent_sms=body.consent_sms,
    )
    async with request.app[DB].session() as session, session.begin():
        try:
            member = await create_member(session, fields)
        except NotFound as err:
            raise _bad(f"referrer_id: {err}", 422) from None
    return _out(member, 201)


async def get_one(request: web.Request) -> web.Response:
    """`GET /api/v1/members/{id}`: the member as stored (a merged one shows `merged_into`)."""
    return _out(await _member(request, request.match_info["member_id"], "members.read"))


async def patch(request: web.Request) -> web.Response:
    """`PATCH /api/v1/members/{id}`: change name, gender, birthday, consents or phone."""
    member_id = request.match_info["member_id"]
    await _member(request, member_id, "members.write")
    changes = (await read_body(request, MemberPatch)).model_dump(exclude_unset=True)
    for key in ("phone", "name", "gender", "consent_marketing", "consent_sms"):
        if key in changes and changes[key] is None:
            raise _bad(f"{key}: may not be null", 422)
    async with request.app[DB].session() as session, session.begin():
        member = await update_member(session, member_id, changes)
    return _out(member)


async def search(request: web.Request) -> web.Response:
    """`GET /api/v1/members?phone=&name=&level=&tag=&segment=&include_merged=&limit=&offset=`, newest first.

    `tag` is a tag code, `segment` an RFM segment name; an unknown one is a 400 naming it.
    """
    who = principal(request)
    who.require("members.read")
    query = _query(request, who)
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    async with request.app[DB].session() as session:
        try:
            rows, more = await search_members(session, query, limit=limit, offset=offset)
        except (UnknownLevel, UnknownTag) as err:
            raise _bad(str(err)) from None
    page = MemberPage(
        items=[MemberOut.model_validate(m) for m in rows], next=offset + limit if more else None
    )
    return web.json_response(text=page.model_dump_json())


async def birthday_list(request: web.Request) -> web.Response:
    """`GET /api/v1/members/birthdays?days=7&from=`: birthdays from `from` (today) for `days` days."""
    who = principal(request)
    who.require("members.read")
    days = query_int(request, "days", 7, 1, MAX_BIRTHDAY_DAYS)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, 10**9)
    raw = request.query.get("from")
    try:
        first = date.fromisoformat(raw) if raw else datetime.now(UTC).astimezone(_OFFICE_TZ).date()
    except ValueError:
        raise _bad(f"from must be a date like 2026-12-28, got {raw!r}") from None
    async with request.app[DB].session() as session:
        rows, more = await birthdays(session, first, days, stores=who.stores, limit=limit, offset=offset)
    items = [
        BirthdayItem(
            **MemberOut.model_validate(r.member).model_dump(),
            next_birthday=r.next_birthday,
            turns=r.turns,
            days_until=r.days_until,
        )
        for r in rows
    ]
    page = BirthdayPage(from_=first, days=days, items=items, next=offset + limit if more else None)
    return web.json_response(text=page.model_dump_json(by_alias=True))


async def merge(request: web.Request) -> web.Response:
    """`POST /api/v1/members/{id}/merge {into, take_phone?}`: the survivor after the merge."""
    member_id = request.match_info["member_id"]
    await _member(request, member_id, "members.write")
    body = await read_body(request, MergeIn)
    await _member(request, body.into, "members.write")
    async with request.app[DB].session() as session, session.begin():
        survivor = await merge_members(session, member_id, body.into, take_phone=body.take_phone)
    return _out(survivor)


async def code(request: web.Request) -> web.Response:
    """`GET /api/v1/members/{id}/code`: the current checkout code (changes every 30 s, works once)."""
    member_id = request.match_info["member_id"]
    await _member(request, member_id, "members.write")
    async with request.app[DB].session() as session, session.begin():
        issued = await issue_code(session, member_id)
    body = MemberCodeOut(
        member_id=issued.member_id,
        code=issued.code,
        qr=issued.qr,
        refresh_at=issued.refresh_at,
        expires_at=issued.expires_at,
    )
    return web.json_response(text=body.model_dump_json(), headers={"Cache-Control": "no-store"})


async def _upload(request: web.Request) -> bytes:
    """The raw body, read with a limit of its own (the app's 1 MiB JSON limit is too small)."""
    if request.content_length is not None and request.content_length > MAX_UPLOAD:
        raise ProblemError(Problem(title="File too large", status=413, detail="at most 20 MiB per import"))
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise ProblemError(
                Problem(title="File too large", status=413, detail="at most 20 MiB per import")
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def import_xlsx(request: web.Request) -> web.Response:
    """`POST /api/v1/members/import?skip_invalid=&store=` with an .xlsx body: the row report."""
    who = principal(request)
    store = request.query.get("store") or None
    who.require("members.write", store=store)
    if store is None and who.stores is not None and len(who.stores) == 1:
        store = next(iter(who.stores))
    skip = request.query.get("skip_invalid", "false").lower() in {"1", "true", "yes"}
    welcome = request.query.get("welcome", "false").lower() in {"1", "true", "yes"}
    data = await _upload(request)
    try:
        report = await import_members(
            request.app[DB], data, skip_invalid=skip, default_store=store, scope=who.stores, welcome=welcome
        )
    except BadMemberFile as err:
        raise _bad(str(err), 422) from None
    if report.errors and not report.written:
        problem = Problem(
            type="https://storelink.dev/problems/member-import",
            title="Nothing was imported",
            status=422,
            detail=(
                f"{len(report.errors)} problem(s) in {report.rows} row(s); fix them or send skip_invalid=true"
            ),
            errors=[FieldError(field=f"row {e.row}: {e.column}", message=e.message) for e in report.errors],
        )
        raise ProblemError(problem)
    return web.json_response(report.as_dict())


async def export_xlsx(request: web.Request) -> web.Response:
    """`GET /api/v1/members/export?phone=&name=&level=&tag=&segment=`: the search's members, as .xlsx."""
    who = principal(request)
    who.require("members.read")
    try:
        data = await export_members(request.app[DB], _query(request, who))
    except (UnknownLevel, UnknownTag) as err:
        raise _bad(str(err)) from None
    name = f"members-{datetime.now(UTC).astimezone(_OFFICE_TZ):%Y%m%d}.xlsx"
    return web.Response(
        body=data,
        content_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    """Register the member routes (fixed paths before `{member_id}`)."""
    app.router.add_post("/api/v1/members", create)
    app.router.add_get("/api/v1/members", search)
    app.router.add_get("/api/v1/members/birthdays", birthday_list)
    app.router.add_post("/api/v1/members/import", import_xlsx)
    app.router.add_get("/api/v1/members/export", export_xlsx)
    app.router.add_get("/api/v1/members/{member_id}", get_one)
    app.router.add_patch("/api/v1/members/{member_id}", patch)
    app.router.add_post("/api/v1/members/{member_id}/merge", merge)
    app.router.add_get("/api/v1/members/{member_id}/code", code)
