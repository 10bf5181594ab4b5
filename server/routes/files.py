"""/v1/files: upload, list, retrieve, delete and download training files."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File as FileParam, Form, Query, UploadFile
from urllib.parse import quote

from fastapi.responses import StreamingResponse

from hubtune.ids import new_id
from hubtune.models import File, now
from hubtune.storage import LineTooLong, TooLarge
from server import crud
from server.deps import CurrentKey, SessionDep, SettingsDep, StorageDep
from server.errors import ApiError, bad_request, not_found
from server.schemas import FileDeleted, FileList, FilePublic

router = APIRouter(prefix="/files", tags=["files"])


@router.post("", response_model=FilePublic)
def upload_file(
    session: SessionDep,
    key: CurrentKey,
    settings: SettingsDep,
    storage: StorageDep,
    file: Annotated[UploadFile, FileParam(description="A JSONL file of training examples")],
    purpose: Annotated[str, Form()],
) -> FilePublic:
    if purpose != crud.FINE_TUNE:
        raise bad_request(
            f"Invalid value for 'purpose': '{purpose}'. Only '{crud.FINE_TUNE}' is supported.",
            param="purpose", code="invalid_value",
        )
    file_id = new_id("file")
    try:
        stored = storage.save_file(
            file_id, file.file, max_bytes=settings.max_upload_bytes, max_line_bytes=settings.max_line_bytes
        )
    except LineTooLong as exc:
        raise bad_request(
            f"Line {exc.line} of the file is longer than the limit of {exc.limit} bytes.", param="file",
            code="line_too_long",
        ) from None
    except TooLarge:
        raise ApiError(
            413, f"The file is larger than the limit of {settings.max_upload_bytes} bytes.", param="file",
            code="file_too_large",
        ) from None
    if stored.size == 0:
        storage.delete_file(file_id)
        raise bad_request("The file is empty.", param="file", code="empty_file")
    filename = (file.filename or "upload.jsonl").replace("\x00", "")[:512] or "upload.jsonl"
    row = File(
        id=file_id, owner=key.owner, filename=filename, purpose=purpose, bytes=stored.size,
        sha256=stored.sha256, status="processed", created_at=now(),
    )
    session.add(row)
    try:
        session.commit()
    except BaseException:
        storage.delete_file(file_id)
        raise
    return FilePublic.of(row)


@router.get("", response_model=FileList)
def list_files(
    session: SessionDep,
    key: CurrentKey,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    rows, has_more = crud.list_files(session, key, purpose=purpose, after=after, limit=limit, order=order)
    data = [FilePublic.of(r) for r in rows]
    return FileList(
        data=data, has_more=has_more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )


@router.get("/{file_id}", response_model=FilePublic)
def retrieve_file(session: SessionDep, key: CurrentKey, file_id: str) -> FilePublic:
    return FilePublic.of(crud.get_file(session, key, file_id))


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(session: SessionDep, key: CurrentKey, storage: StorageDep, file_id: str) -> FileDeleted:
    row = crud.get_file(session, key, file_id)
    row.deleted_at = now()
    session.commit()
    storage.delete_file(row.id)
    return FileDeleted(id=row.id)


@router.get("/{file_id}/content", response_class=StreamingResponse)
def file_content(session: SessionDep, key: CurrentKey, storage: StorageDep, file_id: str) -> StreamingResponse:
    row = crud.get_file(session, key, file_id)
    chunks = storage.read_file(row.id)  # streamed from the store; its checksum is checked to the end
    if chunks is None:
        raise not_found("file", file_id)
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"Content-Length": str(row.bytes), "Content-Disposition": _attachment(row.filename)})


def _attachment(filename: str) -> str:
    """As Starlette's FileResponse words it: an RFC 5987 filename* when the name needs quoting."""
    quoted = quote(filename)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != filename else f'attachment; filename="{filename}"'

