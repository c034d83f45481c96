"""Settings for the web hosts."""

# Plain settings of the app, as environment variables (secrets go elsewhere: README).
app_env = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "16", "GRACEFUL_TIMEOUT": "30"}
