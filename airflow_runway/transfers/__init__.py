"""Transfers of Eachlabs prediction outputs to storage."""

from __future__ import annotations

from airflow_runway.transfers.eachlabs_to_object_storage import (
    DownloadError,
    DownloadRejectedError,
    EachlabsToObjectStorageOperator,
)

__all__ = ["DownloadError", "DownloadRejectedError", "EachlabsToObjectStorageOperator"]
