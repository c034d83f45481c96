#!/bin/sh
# Render the upstream from $APP_UPSTREAM into nginx's config, then hand PID 1
# to nginx (or to the command given, e.g. `nginx -T` to print the config).
set -eu

template=/etc/nginx/templates/app.conf.template
target=/etc/nginx/conf.d/app.conf

if [ -z "${APP_UPSTREAM:-}" ]; then
    echo "docker-entrypoint: APP_UPSTREAM is not set (expected host:port, e.g. app-v2-abc:8000)" >&2
    exit 64
fi
# Only host:port characters, so the value is safe inside sed and nginx syntax.
case "$APP_UPSTREAM" in
    *[!A-Za-z0-9.:_\[\]-]*)
        echo "docker-entrypoint: APP_UPSTREAM has unexpected characters: $APP_UPSTREAM" >&2
        exit 64
        ;;
esac

sed "s|@APP_UPSTREAM@|${APP_UPSTREAM}|g" "$template" > "$target"

# TLS beside plain HTTP when the host mounts a certificate and its key.
if [ -f /etc/nginx/tls/tls.crt ] && [ -f /etc/nginx/tls/tls.key ]; then
    cp /etc/nginx/deploykit-tls.conf /etc/nginx/conf.d/tls.conf
else
    rm -f /etc/nginx/conf.d/tls.conf
fi

# nginx exits at start if the upstream name does not resolve yet; give Docker's
# embedded DNS a moment when the app container was started just before us.
host=${APP_UPSTREAM%:*}
host=${host#[}
host=${host%]}
wait_seconds=${APP_UPSTREAM_WAIT_SECONDS:-10}
waited=0
until getent hosts "$host" >/dev/null 2>&1; do
    if [ "$waited" -ge "$wait_seconds" ]; then
        echo "docker-entrypoint: $host does not resolve after ${wait_seconds}s; starting nginx anyway" >&2
        break
    fi
    sleep 1
    waited=$((waited + 1))
done

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec nginx -g 'daemon off;'
