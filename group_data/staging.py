"""Settings for the staging fleet (inventories/staging.py)."""

app_image = "registry.example.com/acme/app"
app_nginx_image = "registry.example.com/acme/nginx:1"
haproxy_redirect_https = True
