"""Settings for every host. Each key is documented where its default lives (the
component's DEFAULTS); an unknown key stops the deploy. See docs/settings.md."""

# Every deploy after bootstrap connects as this user and escalates with sudo.
ssh_user = "deploy"
_sudo = True

# Who may reach what, by role. Sources are groups (their hosts' private_ip), CIDRs,
# or "any". SSH (22/tcp) is always open to hardening_ssh_sources.
hardening_firewall_matrix = {
    "lb": {"80/tcp": ["any"], "443/tcp": ["any"]},
    # nginx: TLS (443) for HAProxy (haproxy_backend_tls); plain HTTP (80) too, for a
    # fleet with haproxy_backend_tls = False or on its way to TLS.
    "web": {"80/tcp": ["lb"], "443/tcp": ["lb"]},
    "db": {"5432/tcp": ["web", "job"], "6379/tcp": ["web", "job"]},
    # Central logging: every host sends its logs to the log host.
    "logs": {"2514/tcp": ["lb", "web", "job", "db", "logs"]},
    # The search accessory (Elasticsearch in group_data/staging.py), for the app only.
    "job": {"9200/tcp": ["web"]},
}

# The app's environment on web and job hosts, beside the secrets file's values; every
# variable is declared in app/Envfile.yml. ${NAME} refers to another variable: a secret,
# another entry here, or <GROUP>_HOST, the first host of that inventory group (README:
# Secrets). A secret inside a URL must be URL-safe (the sandbox's are hex).
app_env = {
    "GUNICORN_WORKERS": "2",
    "GUNICORN_THREADS": "16",
    "GRACEFUL_TIMEOUT": "30",
    "DB_USER": "app",
    "DB_NAME": "app",
    "DATABASE_URL": (
        "postgres://${DB_USER}:${DB_PASSWORD}@${DB_HOST}:5432/${DB_NAME}?sslmode=require"
    ),
    "REDIS_URL": "redis://:${REDIS_PASSWORD}@${DB_HOST}:6379/0",
}
