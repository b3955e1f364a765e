"""The provider registers with Airflow as declared: schema-valid metadata, discovered hook, link and form."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import airflow
import jsonschema

from airflow_runway.get_provider_info import CONN_FIELDS, get_provider_info


def test_provider_info_matches_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_declared_module_and_class_imports():
    info = get_provider_info()
    modules = [
        m
        for section in ("hooks", "operators", "sensors", "triggers")
        for e in info[section]
        for m in e["python-modules"]
    ]
    modules += [t["python-module"] for t in info["transfers"]]
    for module in modules:
        importlib.import_module(module)
    for dotted in [*info["extra-links"], *(c["hook-class-name"] for c in info["connection-types"])]:
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name)


def test_providers_manager_discovers_the_connection_type_and_link():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-runway" in manager.providers
    hook = manager.hooks["eachlabs"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_runway.hooks.eachlabs.EachlabsHook"
    assert hook.connection_id_attribute_name == "eachlabs_conn_id"
    assert "airflow_runway.links.RunwayVideoLink" in manager.extra_links_class_names
    behaviour = manager.field_behaviours["eachlabs"]
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["placeholders"]["host"] == "https://api.eachlabs.ai"
    assert {"schema", "login", "port"} <= set(behaviour["hidden_fields"])
    widgets = {name.rsplit("__", 1)[-1] for name in manager.connection_form_widgets if "eachlabs" in name}
    assert widgets == set(CONN_FIELDS)


def test_hook_form_methods_match_the_declaration():
    from airflow_runway.hooks.eachlabs import EachlabsHook

    assert EachlabsHook.get_ui_field_behaviour()["relabeling"]["password"] == "API key"
    widgets = EachlabsHook.get_connection_form_widgets()  # the legacy path: wtforms fields
    assert set(widgets) == set(CONN_FIELDS)
    assert widgets["rate_limit_per_minute"].field_class.__name__ == "IntegerField"
    assert widgets["rate_limit_per_minute"].kwargs["default"] == 60


def test_admin_providers_links_to_our_documentation():
    """Airflow's Providers page links the package name to ``documentation_url``, read from the package's
    ``Documentation`` project URL; without one the UI falls back to an airflow.apache.org page that does not exist."""
    from importlib.metadata import metadata

    from airflow.api_fastapi.core_api.services.public.providers import _provider_mapper
    from airflow.providers_manager import ProvidersManager

    urls = dict(entry.split(", ", 1) for entry in metadata("airflow-runway").get_all("Project-URL") or [])
    served = _provider_mapper(ProvidersManager().providers["airflow-runway"])
    # Airflow 3.2.0 keeps the space after the metadata's comma (3.3 strips it); a browser's URL parser drops it.
    assert (served.documentation_url or "").strip() == urls["Documentation"]
    assert urls["Documentation"] == f"{urls['Source']}#readme"
