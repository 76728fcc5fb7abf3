"""Request and response bodies of the friendly JSON endpoints (shown with examples on /docs).

Requests are strict: unknown fields, wrong JSON types, NaN/infinity are rejected with a 400
whose ``error`` names the field (``texts[1]: Input should be a valid string``). Semantic
checks (empty strings, shapes, caps) happen in :mod:`service.inputs`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from bentoml import IODescriptor
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from service.client_text import clip, parse_version
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


def describe_validation_error(exc: ValidationError, fields: list[str] | None = None) -> str:
    """The first pydantic error as ``<field path>: <message>``."""
    error = exc.errors(include_url=False)[0]
    path = ""
    for part in error["loc"]:
        part = part if isinstance(part, int) else clip(part)  # an unknown key is the client's
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error["type"] == "extra_forbidden":
        accepted = f" (accepted: {', '.join(fields)})" if fields else ""
        return f"{path}: unknown field{accepted}"
    if error["type"] == "json_invalid":
        return f"request body: {error['msg']}"
    if error["type"] == "missing":
        return f"{path}: required field is missing"
    return f"{path or 'request body'}: {error['msg']}"


class RequestModel(IODescriptor):
    """A strict JSON request; also accepts multipart forms where ``file_fields`` says so."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    # Fields that may arrive as uploaded files in a multipart/form-data request.
    file_fields: ClassVar[tuple[str, ...]] = ()
    # Every endpoint can address one version of its model; none = the default version.
    version: int | None = Field(
        None, ge=0, description="Answer with this version of the model (default: the latest)."
    )
    label: str | None = Field(
        None, min_length=1, description="Answer with the version this label names (e.g. stable)."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _ascii_version(cls, value: Any, info: ValidationInfo) -> Any:
        # A multipart form field is text (validated in python mode), and pydantic's lax
        # int() takes "3_0" or " 3"; a JSON body stays strict (a string is refused).
        if info.mode == "python" and isinstance(value, str):
            return parse_version(value)
        return value

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> RequestModel:
        media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        try:
            if media_type == "multipart/form-data":
                if not cls.file_fields:
                    raise UnsupportedMediaType("this endpoint takes a JSON body (application/json)")
                return cls.model_validate(await cls._form_data(request), strict=False)
            body = await request.body()
            return cls.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc, list(cls.model_fields))) from None

    @classmethod
    async def _form_data(cls, request: Any) -> dict[str, Any]:
        from starlette.exceptions import HTTPException
        from starlette.formparsers import MultiPartException

        try:
            form = await request.form(max_files=64, max_fields=16)
        except (MultiPartException, HTTPException, ValueError, KeyError) as exc:
            detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or exc
            if str(detail).startswith("Too many files"):  # the item cap, as JSON's 413
                raise PayloadTooLarge(f"request body: {detail}") from None
            raise InvalidInput(f"request body: not a valid multipart form ({detail})") from None
        data: dict[str, Any] = {}
        for key in form:
            values = form.getlist(key)
            if key in cls.file_fields:
                data[key] = [await v.read() if hasattr(v, "read") else v for v in values]
                continue
            value = values[0]
            try:
                data[key] = json.loads(value) if isinstance(value, str) else value
            # Not JSON (JSONDecodeError is a ValueError), an integer past Python's 4300-digit
            # limit (ValueError) or nested too deeply: validated as the plain string instead.
            except (ValueError, RecursionError):
                data[key] = value
        return data


class ModelDescription(BaseModel):
    name: str
    version: int
    variant: str


# ---- reuters


class TopicsRequest(RequestModel):
    """Newswire texts to classify into Reuters topics."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"texts": ["oil prices rose as opec cut output"], "top_k": 3}}
    )
    texts: list[str] = Field(description="One or more non-empty texts (at most 64).")
    top_k: int = Field(3, description="How many topics per text (1 to the number of topics).")


class Topic(BaseModel):
    topic: str
    index: int
    probability: float


class TopicsResult(BaseModel):
    topics: list[Topic]


class TopicsResponse(BaseModel):
    results: list[TopicsResult]
    model: ModelDescription


# ---- imdb


class SentimentRequest(RequestModel):
    """Movie reviews to classify as positive or negative."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"texts": ["a wonderful film, the actors were brilliant"]}}
    )
    texts: list[str] = Field(description="One or more non-empty reviews (at most 64).")


class Sentiment(BaseModel):
    label: str = Field(description='"positive" or "negative"')
    probability: float = Field(description="Probability of that label.")
    positive_probability: float


class SentimentResponse(BaseModel):
    results: list[Sentiment]
    model: ModelDescription


# ---- cifar, mnist


class ImagesRequest(RequestModel):
    """Images as nested arrays, base64 PNG/JPEG objects, or uploaded files.

    Nested arrays: ``HxWxC`` at the model's size (mnist 28x28 or 28x28x1, cifar 32x32x3),
    integers 0-255 or floats 0-1. ``{"b64": "..."}`` items and multipart/form-data uploads
    (field ``images``, repeatable; optional field ``top_k``) are PNG/JPEG files of any size,
    converted to the model's channels and resized (bilinear) to its size.
    """

    model_config = ConfigDict(
        json_schema_extra={"example": {"images": [[[0, 255], [255, 0]]], "top_k": 1}}
    )
    file_fields: ClassVar[tuple[str, ...]] = ("images",)
    images: list[Any] = Field(description="One or more images (at most 64).")
    top_k: int = Field(
        1, description="How many classes to list in `top` (1 to the number of classes)."
    )


class ImageClass(BaseModel):
    label: str
    index: int
    probability: float


class ImageResult(BaseModel):
    label: str
    index: int
    probability: float
    top: list[ImageClass]


class ImagesResponse(BaseModel):
    results: list[ImageResult]
    model: ModelDescription


# ---- cosine


class ForecastRequest(RequestModel):
    """The last values of the series; the next ``horizon`` values are forecast recursively."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "window": [20.0, 16.2, 6.2, -6.2, -16.2, -20.0, -16.2, -6.2, 6.2, 16.2],
                "horizon": 3,
            }
        }
    )
    window: list[float] = Field(
        description="Exactly as many finite numbers as the model's window (10)."
    )
    horizon: int = Field(1, description="How many future values (1 to 100).")


class ForecastResponse(BaseModel):
    forecast: list[float]
    model: ModelDescription


# ---- translator


class TranslateRequest(RequestModel):
    """English sentences to translate into German."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"sentences": ["i like green apples ."]}}
    )
    sentences: list[str] = Field(description="One or more non-empty sentences (at most 64).")


class TranslateResponse(BaseModel):
    translations: list[str]
    model: ModelDescription
