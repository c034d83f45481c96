"""Settings for the staging fleet (inventories/staging.py)."""

app_image = "registry.example.com/acme/app"
app_nginx_image = "registry.example.com/acme/nginx:2"
haproxy_redirect_https = True

# Encrypted by git-crypt; `git-crypt unlock` before deploying (docs/operations.md: Secrets).
app_secrets_file = "secrets/staging.env"

# Containerized services beside the app (docs/operations.md: Accessories). Elasticsearch, one node,
# on the job host; its data lives in a named volume that outlives its container. The
# firewall (all.py) lets only the web hosts reach 9200.
accessories = {
    "search": {
        "image": "docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
        "hosts": ["job"],
        "ports": ["9200:9200"],
        "volumes": ["search-data:/usr/share/elasticsearch/data"],
        "env": {
            "discovery.type": "single-node",
            "xpack.security.enabled": "false",
            "ES_JAVA_OPTS": "-Xms1g -Xmx1g",
        },
    },
}
# PostgreSQL's certificate and key; the key is encrypted by git-crypt like every secret.
postgres_tls_certificate = "secrets/staging-postgres.crt"
postgres_tls_key = "secrets/staging-postgres.key"
