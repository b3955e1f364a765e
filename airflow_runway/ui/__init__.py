"""The provider's Airflow UI plugin: a "Runway videos" page and a video view on task instances."""
