"""Image routes: pull, list (paged), get and HEAD by manifest digest (or
any name ``Runtime.images.inspect`` takes), over the home's image cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from ..boxapi import IMAGES, PULL
from ..errors import ImageError, ImageReason, InvalidArgumentError
from ..image import ImageInfo as OurImage
from ..image.media import ImageConfig
from .auth import require_token
from .boxes import IdempotencyKey, answer, iso
from .idempotency import Reply, fingerprint
from .models import ImageInfo, ListImagesResponse, PullImageRequest
from .state import ServerState, State

router = APIRouter(dependencies=[Depends(require_token)])


def split_name(name: str) -> tuple[str, str]:
    """``repository:tag`` (the tag after the last ``:`` past the last ``/``)."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


def view(image: OurImage) -> ImageInfo:
    reference = image.tags[0] if image.tags else image.id
    repository, tag = split_name(image.tags[0]) if image.tags else (image.id, "")
    return ImageInfo(
        reference=reference,
        repository=repository,
        tag=tag,
        id=image.id,
        cached_at=iso(image.created),
        size_bytes=image.size,
        boxlite_tags=list(image.tags),
        boxlite_layers=list(image.layers),
        boxlite_config=config_of(image.config),
    )


def config_of(config: ImageConfig) -> dict[str, list[str] | str]:
    """What a box takes from the image (``ImageConfig`` less its diff_ids)."""
    return {
        "env": list(config.env),
        "entrypoint": list(config.entrypoint),
        "cmd": list(config.cmd),
        "workdir": config.workdir,
        "user": config.user,
    }


def pull(state: ServerState, req: PullImageRequest) -> Reply:
    try:
        image = state.runtime.images.pull(req.reference, insecure=req.boxlite_insecure)
    except ImageError as exc:  # any failure of a pull is the contract's 422
        raise ImageError(f"images error: {exc.message}", exc.reason) from None
    except InvalidArgumentError as exc:  # a malformed reference
        raise ImageError(f"images error: {exc.message}", ImageReason.INVALID) from None
    return Reply(200, view(image).model_dump(mode="json"))


@router.post(PULL, response_model=ImageInfo, operation_id="pullImage")
def pull_image(req: PullImageRequest, state: State, key: IdempotencyKey = None) -> Response:
    print_ = fingerprint("POST", PULL, req.model_dump_json().encode())
    return answer(state.idempotency.run(key, print_, lambda: pull(state, req)))


@router.get(IMAGES, response_model=ListImagesResponse, operation_id="listImages")
def list_images(
    state: State,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(alias="pageToken")] = None,
) -> ListImagesResponse:
    """Ordered by id (stable); a page token is the last id of a page."""
    images = sorted(state.runtime.images.list(), key=lambda i: i.id)
    if page_token is not None:
        images = [i for i in images if i.id > page_token]
    page = images[:page_size]
    more = len(images) > page_size
    return ListImagesResponse(
        images=[view(i) for i in page], next_page_token=page[-1].id if more and page else None
    )


@router.get(IMAGES + "/{image_id:path}", response_model=ImageInfo, operation_id="getImage")
def get_image(image_id: str, state: State) -> ImageInfo:
    return view(state.runtime.images.inspect(image_id))


@router.head(IMAGES + "/{image_id:path}", status_code=204, operation_id="imageExists")
def image_exists(image_id: str, state: State) -> Response:
    state.runtime.images.inspect(image_id)
    return Response(status_code=204)
