"""The asset events of a transfer: the stored object's details on every outlet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The keys of a transfer's result that every asset event carries as ``extra``.
EXTRA_KEYS = ("uri", "sha256", "size", "content_type", "prediction_id", "source_url")


def emit_asset_events(
    context: Context, outlets: Iterable[Any], result: Mapping[str, Any], dest_conn_id: str | None
) -> None:
    """Give each :class:`~airflow.sdk.Asset` outlet's event the stored object's details as ``extra``, and add
    an event for ``Asset(uri=<stored uri>)`` with the same ``extra`` to each :class:`~airflow.sdk.AssetAlias`.
    """
    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    extra = {key: result[key] for key in EXTRA_KEYS}
    # The connection id (never its secrets) lets a consumer read the object back with the same credentials.
    extra["dest_conn_id"] = (dest_conn_id or "").strip() or None
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            outlet_events[outlet].add(Asset(uri=result["uri"]), extra=dict(extra))
        elif isinstance(outlet, Asset):
            outlet_events[outlet].extra.update(extra)
