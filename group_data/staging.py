"""Settings for the staging fleet (inventories/staging.py)."""

app_image = "registry.example.com/acme/app"
app_nginx_image = "registry.example.com/acme/nginx:1"
haproxy_redirect_https = True

# Encrypted by git-crypt; `git-crypt unlock` before deploying (README: Secrets).
app_secrets_file = "secrets/staging.env"

# PostgreSQL's certificate and key; the key is encrypted by git-crypt like every secret.
postgres_tls_certificate = "secrets/staging-postgres.crt"
postgres_tls_key = "secrets/staging-postgres.key"
