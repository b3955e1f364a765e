"""The Eachlabs client: :class:`~airflow_runway.hooks.eachlabs.EachlabsHook` and its helpers.

- :mod:`~airflow_runway.hooks.eachlabs`: the hook (sync with ``requests``, async with ``aiohttp``).
- :mod:`~airflow_runway.hooks.settings`: an Airflow connection read into base URL, key header and limits.
- :mod:`~airflow_runway.hooks.errors`: HTTP responses and network faults mapped to the typed errors.
- :mod:`~airflow_runway.hooks.retry`: the retry policy shared by the sync and async paths.
- :mod:`~airflow_runway.hooks.session`: the per event loop registry of shared aiohttp sessions and rate budgets.
"""
