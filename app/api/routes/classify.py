"""POST /classify: one image in, class probabilities with Monte Carlo uncertainty out."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import BeforeValidator, Field

from app.api.deps import ServiceDep
from app.api.schemas import ClassifyManyOut, ClassifyOut, ErrorOut
from app.images import ImageTooLargeError
from app.refusals import InvalidRequestError

router = APIRouter(tags=["classify"])

_ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 409, 413, 415, 422, 503)}


def _digits_only(value: object) -> object:
    """Query integers are plain digits: '5_0' (Python's int() reads 50) and '1.0' are refused, not guessed."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written with the digits 0-9 only")
    return value


_DIGITS = BeforeValidator(_digits_only)
_DIGITS_OR_AUTO = BeforeValidator(lambda value: value if value == "auto" else _digits_only(value))


@router.post("/classify", response_model=ClassifyOut | ClassifyManyOut, responses=_ERRORS)
async def classify(
    request: Request,
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="the image (JPEG, PNG, WebP, GIF, BMP, TIFF)")],
    top_k: Annotated[int | None, Query(ge=1, description="return only the k most probable classes"), _DIGITS] = None,
    samples: Annotated[
        Annotated[int, Field(ge=1)] | Literal["auto"] | None,
        Query(description="Monte Carlo samples (1..max_samples), or auto: blocks of 4 until the top class settles"),
        _DIGITS_OR_AUTO,
    ] = None,
    alpha: Annotated[
        float | None,
        Query(gt=0, lt=1, description="prediction-set miscoverage: the set holds the true class with prob. 1 - alpha"),
    ] = None,
    model: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
        Query(
            max_length=16,
            description="the model to answer with (GET /models; default: the server's default model); "
            "repeat it (model=a&model=b) for one answer per model from one image encode",
        ),
    ] = None,
) -> dict:
    if len((await request.form()).getlist("file")) > 1:  # the parsed form is cached: this re-reads nothing
        raise InvalidRequestError("the request has more than one 'file' part: send exactly one image per request")
    limit = service.settings.max_image_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLargeError()
    answers = await service.classify(data, top_k=top_k, samples=samples, alpha=alpha, models=model)
    return answers[0] if model is None or len(set(model)) == 1 else {"answers": answers}
