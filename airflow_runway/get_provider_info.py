"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

#: The connection's fields stored in ``Connection.extra``, shared with the hook's form methods.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    # Not "auth_header": Airflow treats that name as a secret, so its form would pre-fill and save "***".
    "key_header": {
        "label": "API key header",
        "description": "x-api-key sends 'X-API-Key: <key>' (default); bearer sends 'Authorization: Bearer <key>'.",
        "schema": {"type": ["string", "null"], "enum": ["x-api-key", "bearer"], "default": "x-api-key"},
    },
    "rate_limit_per_minute": {
        "label": "Rate limit (requests per minute)",
        "description": "Request budget shared by every trigger of this connection in a triggerer process.",
        "schema": {"type": ["integer", "null"], "default": 60, "minimum": 1},
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
    },
    "max_attempts": {
        "label": "Attempts per request",
        "description": "How many times a transient fault (429, 5xx, reset, timeout) is tried before failing.",
        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 1},
    },
}

#: How the standard connection form fields are shown, shared with the hook's form methods.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"password": "API key", "host": "API base URL"},
    "placeholders": {"host": "https://api.eachlabs.ai", "password": "your Eachlabs API key"},
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata: hooks, operators, sensors, triggers, links and connection type."""
    return {
        "package-name": "airflow-runway",
        "name": "Runway (Eachlabs)",
        "description": "Runway AI video generation through the Eachlabs prediction API, deferrable by default.",
        "integrations": [
            {
                "integration-name": "Eachlabs",
                "external-doc-url": "https://docs.eachlabs.ai",
                "tags": ["service"],
            }
        ],
        "hooks": [{"integration-name": "Eachlabs", "python-modules": ["airflow_runway.hooks.eachlabs"]}],
        "operators": [
            {
                "integration-name": "Eachlabs",
                "python-modules": ["airflow_runway.operators.prediction", "airflow_runway.operators.runway"],
            }
        ],
        "sensors": [{"integration-name": "Eachlabs", "python-modules": ["airflow_runway.sensors.prediction"]}],
        "triggers": [{"integration-name": "Eachlabs", "python-modules": ["airflow_runway.triggers.prediction"]}],
        "transfers": [
            {
                "source-integration-name": "Eachlabs",
                "target-integration-name": "Common IO",
                "python-module": "airflow_runway.transfers.eachlabs_to_object_storage",
            }
        ],
        "extra-links": ["airflow_runway.links.RunwayVideoLink"],
        "config": {
            "runway": {
                "description": "Settings of the airflow-runway provider.",
                "options": {
                    "allow_private_network": {
                        "description": (
                            "Whether EachlabsToObjectStorageOperator may download from non-public addresses "
                            "(private, loopback, link-local such as 169.254.169.254, unique-local IPv6), for the "
                            "source URL and every redirect, checked after DNS resolution. Off by default (no "
                            "server-side request forgery); turn it on for the bundled emulator on loopback or an "
                            "internal mirror you trust. The operator's allow_private_network argument wins over it."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": "True",
                        "default": "False",
                    }
                },
            }
        },
        "plugins": [{"name": "runway_videos", "plugin-class": "airflow_runway.ui.plugin.RunwayVideosPlugin"}],
        "connection-types": [
            {
                "connection-type": "eachlabs",
                "hook-class-name": "airflow_runway.hooks.eachlabs.EachlabsHook",
                "hook-name": "Eachlabs",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
