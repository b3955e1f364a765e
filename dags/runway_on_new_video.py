"""
### Runway: on new video

Scheduled on the `runway_daily_video` asset: for every video `runway_daily_video` stores, read it back
from object storage, check it against the checksum recorded at upload, and write a manifest next to it
(`<video>.manifest.json`: size, sha256, prompt, prediction id, model metrics).

The prompt is read from the prediction itself through the Eachlabs API, so the manifest records exactly
what was generated. Triggered by hand (no triggering event), it processes the asset's latest video.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from airflow_runway.hooks.eachlabs import EachlabsHook

DAILY_VIDEO = Asset("runway_daily_video")
CHUNK = 8 * 1024 * 1024

with DAG(
    dag_id="runway_on_new_video",
    schedule=[DAILY_VIDEO],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["runway", "example"],
    doc_md=__doc__,
) as dag:

    @task(inlets=[DAILY_VIDEO])
    def write_manifests(triggering_asset_events: Any = None, inlet_events: Any = None) -> list[str]:
        """Verify each new video and write its manifest; return the manifests' URIs."""
        events = list(triggering_asset_events[DAILY_VIDEO]) if triggering_asset_events else []
        if not events and inlet_events is not None and len(inlet_events[DAILY_VIDEO]):
            events = [inlet_events[DAILY_VIDEO][-1]]  # a manual run: the latest video
        hook = EachlabsHook()
        manifests = []
        for event in events:
            extra = event.extra or {}
            video = ObjectStoragePath(extra["uri"], conn_id=extra.get("dest_conn_id") or None)
            digest, size = hashlib.sha256(), 0
            with video.open("rb") as handle:  # streamed: a video never sits whole in memory
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            if digest.hexdigest() != extra.get("sha256") or size != extra.get("size"):
                raise ValueError(f"{video} does not match its upload record: {size} bytes, {digest.hexdigest()}")
            prediction = hook.get_prediction(extra["prediction_id"])
            manifest = {
                "video": str(video),
                "size": size,
                "sha256": digest.hexdigest(),
                "prediction_id": extra["prediction_id"],
                "prompt": (prediction.get("input") or {}).get("promptText"),
                "model": (prediction.get("input") or {}).get("model"),
                "metrics": prediction.get("metrics") or {},
            }
            target = video.parent / f"{video.name}.manifest.json"
            target.write_text(json.dumps(manifest, indent=2))
            print(f"Wrote {target}")
            manifests.append(str(target))
        return manifests

    write_manifests()
