"""Settings for the local sandbox only (its inventory file is inventories/sandbox.py)."""

# The sandbox generates its own key pair; bootstrap installs it for the deploy user.
bootstrap_extra_public_key_files = [".sandbox/id_ed25519.pub"]

# The sandbox registry (Debian's docker-registry) speaks plain HTTP on its private network.
docker_insecure_registries = ["registry:5000"]

# `make sandbox` generates a self-signed certificate for 127.0.0.1 and localhost.
haproxy_tls_certificate = ".sandbox/tls/haproxy.pem"

# Images built by `make images` and pushed to the sandbox registry.
app_image = "registry:5000/deploykit/app"
app_nginx_image = "registry:5000/deploykit/nginx:1"
