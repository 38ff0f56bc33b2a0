#!/usr/bin/env bash
# Container start: wait for the database, migrate, collect static files, register the models,
# then exec gunicorn so it is PID 1 and receives the container's signals.
set -o errexit -o pipefail -o nounset

cd /app/backend/server

tries="${DB_WAIT_TRIES:-30}"
until python manage.py shell -c "from django.db import connection; connection.ensure_connection()" \
    >/dev/null 2>&1; do
  tries=$((tries - 1))
  if [ "$tries" -le 0 ]; then
    echo "entrypoint: the database at DATABASE_URL did not answer; giving up" >&2
    exit 1
  fi
  echo "entrypoint: waiting for the database ($tries tries left)"
  sleep 2
done

python manage.py migrate --noinput
python manage.py collectstatic --noinput --verbosity 0
python manage.py register_models

exec gunicorn server.wsgi:application --config /app/docker/backend/gunicorn.conf.py
