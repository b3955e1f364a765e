"""Generate a Runway video (text or image to video) with typed, validated, templated parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_runway.operators.prediction import BaseEachlabsPredictionOperator, PredictionRequest
from airflow_runway.runway_input import (
    EACHLABS_MODEL,
    EACHLABS_VERSION,
    build_runway_input,
    resolve_prompt_image,
)

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


class RunwayGenerateVideoOperator(BaseEachlabsPredictionOperator):
    """Generate a video with Runway (Eachlabs model ``runway``) and return its URL.

    .. code-block:: python

        video = RunwayGenerateVideoOperator(
            task_id="generate",
            prompt_text="A lighthouse in a storm, cinematic, {{ ds }}",
            ratio="16:9",
            duration=10,
        )

    Every parameter is checked before the paid request is sent; a bad value fails the task at once (no
    retries), naming the field, the value and what is allowed. A prediction that succeeds without an output URL
    fails the task. See :class:`~airflow_runway.operators.prediction.BaseEachlabsPredictionOperator` for
    the shared parameters (``eachlabs_conn_id``, ``deferrable``, ``poll_interval``, ``timeout``,
    ``wait_for_completion``, ``cancel_on_kill``) and the return value.

    :param prompt_text: what the video shows, at most 1000 characters; required unless ``prompt_image``.
    :param prompt_image: the first frame: an ``https://`` URL, a ``data:image/...;base64,`` URI, a local path,
        or an object-storage path (``s3://...``, an ``ObjectStoragePath``); files are sent as a data URI with
        their real MIME type (JPEG, PNG or WebP, at most 5 MB encoded).
    :param model: the Runway model, ``gen3a_turbo`` by default; newer ones (``gen4_turbo``) pass through.
    :param ratio: ``16:9`` or ``9:16`` (or Runway's pixel forms ``1280:768`` / ``768:1280``).
    :param duration: 5 or 10 seconds.
    :param watermark: whether Runway adds its watermark.
    :param seed: 0..4294967295 for a reproducible video, ``None`` for a random one.
    :param extra_input: further model-specific input keys, passed through as they are (for inputs of newer
        Runway models, e.g. a video clip), which may not override the typed parameters above.
    :param image_conn_id: the Airflow connection used to read an object-storage ``prompt_image``.
    :param eachlabs_version: the Eachlabs model version (``0.0.1``).
    """

    template_fields: Sequence[str] = (
        "prompt_text",
        "prompt_image",
        "model",
        "ratio",
        "duration",
        "watermark",
        "seed",
        "extra_input",
        "image_conn_id",
        "eachlabs_version",
        "webhook_url",
    )
    template_fields_renderers = {"extra_input": "json"}

    def __init__(
        self,
        *,
        prompt_text: str | None = None,
        prompt_image: str | ObjectStoragePath | None = None,
        model: str = "gen3a_turbo",
        ratio: str = "16:9",
        duration: int | str = 10,
        watermark: bool | str = False,
        seed: int | str | None = None,
        extra_input: Mapping[str, Any] | None = None,
        image_conn_id: str | None = None,
        eachlabs_version: str = EACHLABS_VERSION,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt_text = prompt_text
        self.prompt_image = prompt_image
        self.model = model
        self.ratio = ratio
        self.duration = duration
        self.watermark = watermark
        self.seed = seed
        self.extra_input = extra_input
        self.image_conn_id = image_conn_id
        self.eachlabs_version = eachlabs_version

    def build_request(self, context: Context) -> PredictionRequest:
        image = resolve_prompt_image(self.prompt_image, self.image_conn_id or None) if self.prompt_image else None
        payload = build_runway_input(
            prompt_text=self.prompt_text,
            prompt_image=image,
            model=self.model,
            ratio=self.ratio,
            duration=self.duration,
            watermark=self.watermark,
            seed=self.seed,
            extra_input=self.extra_input,
        )
        return PredictionRequest(EACHLABS_MODEL, self.eachlabs_version, payload)

    def check_result(self, result: dict[str, Any]) -> None:
        if not result.get("video_url"):
            raise AirflowFailException(
                f"Prediction {result.get('prediction_id')} succeeded but its output holds no video URL "
                f"(outputs: {result.get('outputs')!r}); look it up in the Eachlabs console"
            )
