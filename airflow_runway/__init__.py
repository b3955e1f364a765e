"""Apache Airflow provider for Runway video generation through the Eachlabs API."""
