#!/usr/bin/env bash
# The container's start, in one of three modes (the image's CMD is "serve"):
#
#   entrypoint.sh migrate    the release step, once per release: wait for the database, apply the
#                            migrations, register the models, collect static files, exit 0.
#                            compose's migrate service and the Kubernetes Job run this.
#   entrypoint.sh serve      wait for the database; run the release step first when
#                            RUN_MIGRATIONS is on (the default, so a lone `docker run` works);
#                            then exec gunicorn, so it is PID 1 and receives the container's
#                            signals. compose and Kubernetes set RUN_MIGRATIONS=0: three
#                            replicas must not migrate three times at once.
#   entrypoint.sh wait-for-migrations
#                            wait until the database has every migration this image knows
#                            (`migrate --check`), then exit 0: the Kubernetes pods' init
#                            container, so new code never serves an old schema.
#
# Environment: APP_DIR (the Django project; /app/backend/server), RUN_MIGRATIONS (on),
# COLLECT_STATIC (on: collectstatic into STATIC_ROOT during the release step; off where the copy
# made at build time is served, as in Kubernetes), DB_WAIT_TRIES (30) and MIGRATIONS_WAIT_TRIES
# (150), tries 2 seconds apart.
set -o errexit -o pipefail -o nounset

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${APP_DIR:-/app/backend/server}"

# flag NAME DEFAULT: succeeds when the variable (or the default) is on, fails when it is off.
flag() {
  local value="${!1:-$2}"
  case "${value,,}" in
    1 | true | yes | on) return 0 ;;
    0 | false | no | off) return 1 ;;
    *)
      echo "entrypoint: $1=$value: use 1 (on) or 0 (off)" >&2
      exit 64
      ;;
  esac
}

# wait_until WHAT TRIES COMMAND...: runs COMMAND until it succeeds, TRIES times at most.
wait_until() {
  local what="$1" tries="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then
      echo "entrypoint: gave up waiting for $what" >&2
      exit 1
    fi
    echo "entrypoint: waiting for $what ($tries tries left)"
    sleep 2
  done
}

wait_for_database() {
  wait_until "the database at DATABASE_URL" "${DB_WAIT_TRIES:-30}" \
    python manage.py shell -c "from django.db import connection; connection.ensure_connection()"
}

release() {
  python manage.py migrate --noinput
  python manage.py register_models
  if flag COLLECT_STATIC 1; then
    python manage.py collectstatic --noinput --verbosity 0
  fi
}

case "${1:-serve}" in
  migrate)
    wait_for_database
    release
    echo "entrypoint: release step done"
    ;;
  serve)
    wait_for_database
    if flag RUN_MIGRATIONS 1; then
      release
    fi
    exec gunicorn server.wsgi:application --config "$here/gunicorn.conf.py"
    ;;
  wait-for-migrations)
    wait_for_database
    wait_until "the migrations (the release step: entrypoint.sh migrate)" \
      "${MIGRATIONS_WAIT_TRIES:-150}" python manage.py migrate --check
    ;;
  *)
    echo "entrypoint: unknown mode '$1': use serve (the default), migrate or" \
      "wait-for-migrations" >&2
    exit 64
    ;;
esac
