#!/usr/bin/env bash
# Installs (when missing) and starts the servers the tests run against, all
# bound to 127.0.0.1, then writes their addresses to $CITADEL_SERVICES_DIR/env
# for the test run to source:
#   - PostgreSQL (Debian package), a throwaway cluster owned by user postgres;
#   - an S3-compatible server: moto[server] from PyPI, with one bucket;
#   - SoftHSM2 (Debian package), with a private token directory;
#   - promtool (Debian prometheus), tritonclient[http,grpc] and schemathesis (PyPI) for the gateway tests.
# Idempotent: servers already answering are left running.
set -euo pipefail
STATE=${CITADEL_SERVICES_DIR:-/tmp/citadel-services}
PG_PORT=${CITADEL_PG_PORT:-55432}
S3_PORT=${CITADEL_S3_PORT:-55433}
S3_TLS_PORT=${CITADEL_S3_TLS_PORT:-55434}
BUCKET=citadel-test
mkdir -p "$STATE"
log() { echo "services: $*" >&2; }

# ---------------------------------------------------------------- install
need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need_apt+=(postgresql)
command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)
# The gateway tests: promtool validates /metrics, curl and openssl are the clients.
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
# Rate limits shared by gateway replicas: tests start their own Redis.
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The image build (scripts/build-image.sh) and its test write OCI layouts with umoci.
command -v umoci >/dev/null || need_apt+=(umoci)
# Replicas behind a load balancer are tested with HAProxy.
command -v haproxy >/dev/null || need_apt+=(haproxy)
# SIEM forwarding is tested against a real rsyslog receiving syslog over TLS.
command -v rsyslogd >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so ] || need_apt+=(rsyslog rsyslog-openssl)
# The training-sandbox tests run Debian's python3 as nobody (the pyenv one
# lives under /root, which nobody cannot enter), from a venv it can read.
[ -x /usr/bin/python3 ] || need_apt+=(python3)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
if ! python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
  log "installing moto[server] (pip)"
  python3 -m pip install -q "moto[server]==5.2.1"
fi
softhsm_module=$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -1)

# ---------------------------------------------------------------- PostgreSQL
# The server refuses to run as root; the Debian package creates user postgres.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGDATA="$STATE/pg"
# TLS: a throwaway CA signs the server's certificate (localhost, 127.0.0.1);
# another CA signed nothing here, so a client trusting only it must refuse.
PGTLS="$STATE/pg-tls"
if [ ! -f "$PGTLS/server.crt" ]; then
  rm -rf "$PGTLS"; mkdir -p "$PGTLS"
  for ca in ca other-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=citadel test $ca" -keyout "$PGTLS/$ca.key" -out "$PGTLS/$ca.pem" 2>/dev/null
  done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$PGTLS/server.key" -out "$PGTLS/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$PGTLS/ext"
  openssl x509 -req -in "$PGTLS/server.csr" -CA "$PGTLS/ca.pem" -CAkey "$PGTLS/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PGTLS/ext" -out "$PGTLS/server.crt" 2>/dev/null
  chmod 600 "$PGTLS/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGTLS"
fi
pg_opts="-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA -c fsync=off -c ssl=on -c ssl_cert_file=$PGTLS/server.crt -c ssl_key_file=$PGTLS/server.key"
# A cluster left running by an earlier version of this script, without TLS, is restarted with it.
if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" \
   && [ "$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc 'show ssl' 2>/dev/null)" != "on" ]; then
  log "restarting PostgreSQL with TLS"
  as_pg "$pg_bin/pg_ctl" -D "$PGDATA" -w -t 60 stop -m fast >/dev/null || true
fi
if ! "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    rm -rf "$PGDATA"; mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA"
    as_pg "$pg_bin/initdb" -N -D "$PGDATA" -U postgres --auth=trust >/dev/null
  fi
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$STATE"/pg* 2>/dev/null || true
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$pg_bin/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "$pg_opts" start >/dev/null
fi

# ---------------------------------------------------------------- S3 (moto)
s3_up() { python3 - "$S3_PORT" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=2)
except Exception:
    sys.exit(1)
PY
}
if ! s3_up; then
  log "starting moto S3 server on 127.0.0.1:$S3_PORT"
  nohup python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto.log" 2>&1 &
  for _ in $(seq 1 100); do s3_up && break; sleep 0.2; done
  s3_up || { log "moto did not start; see $STATE/moto.log"; exit 1; }
fi
python3 - "$S3_PORT" "$BUCKET" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/{sys.argv[2]}", method="PUT")
try:
    urllib.request.urlopen(req, timeout=5)
except urllib.error.HTTPError as e:
    if e.code != 409:  # already exists
        raise
PY

# The same over HTTPS, its certificate from the test CA (as a private CA in
# front of MinIO or Ceph would be): a second moto, with its own bucket.
s3_tls_up() { python3 - "$S3_TLS_PORT" "$PGTLS/ca.pem" <<'PY'
import ssl, sys, urllib.request
try:
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    urllib.request.urlopen(f"https://localhost:{sys.argv[1]}/moto-api/", timeout=2, context=ctx)
except Exception:
    sys.exit(1)
PY
}
if ! s3_tls_up; then
  log "starting moto S3 server over HTTPS on 127.0.0.1:$S3_TLS_PORT"
  nohup python3 -m moto.server -H 127.0.0.1 -p "$S3_TLS_PORT" -c "$PGTLS/server.crt" -k "$PGTLS/server.key" \
    >"$STATE/moto-tls.log" 2>&1 &
  for _ in $(seq 1 100); do s3_tls_up && break; sleep 0.2; done
  s3_tls_up || { log "moto (HTTPS) did not start; see $STATE/moto-tls.log"; exit 1; }
fi
python3 - "$S3_TLS_PORT" "$BUCKET" "$PGTLS/ca.pem" <<'PY'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[3])
req = urllib.request.Request(f"https://localhost:{sys.argv[1]}/{sys.argv[2]}", method="PUT")
try:
    urllib.request.urlopen(req, timeout=5, context=ctx)
except urllib.error.HTTPError as e:
    if e.code != 409:  # already exists
        raise
PY

# ---------------------------------------------------------------- model-signing
# The OpenSSF reference tool, for the signing interoperability tests. Its own
# venv: it pins dependencies the rest of the machine need not share.
# (1.1.1 imports pyOpenSSL without declaring it.)
VENV="$STATE/venv"
# The CycloneDX library validates our ML-BOMs against the official schema.
if ! "$VENV/bin/model_signing" --help >/dev/null 2>&1 || ! "$VENV/bin/python" -c 'import cyclonedx.validation.json' 2>/dev/null; then
  log "installing model-signing 1.1.1 and cyclonedx-python-lib 8.9.0 (pip, into $VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "model-signing==1.1.1" "pyOpenSSL==26.4.0" "cyclonedx-python-lib[json-validation]==8.9.0"
fi

# The official Open Inference Protocol client, for the gateway's interop
# test, and schemathesis, which fuzzes the running gateway from its OpenAPI.
if ! "$VENV/bin/python" -c 'import tritonclient.http, tritonclient.grpc, numpy' 2>/dev/null || ! [ -x "$VENV/bin/schemathesis" ]; then
  log "installing tritonclient[http,grpc] 2.73.0 and schemathesis 4.32.5 (pip, into $VENV)"
  "$VENV/bin/pip" install -q "tritonclient[http,grpc]==2.73.0" "numpy==2.2.6" "schemathesis==4.32.5"
fi

# The Kubernetes manifests are validated against the API schema.
if ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  log "installing kubernetes-validate 1.37.0 (pip, into $VENV)"
  "$VENV/bin/pip" install -q "kubernetes-validate==1.37.0"
fi

# onnxruntime checks that the built-in trainers' ONNX exports compute what
# tract computes.
if ! "$VENV/bin/python" -c 'import onnxruntime' 2>/dev/null; then
  log "installing onnxruntime 1.32.0 (pip, into $VENV)"
  "$VENV/bin/pip" install -q "onnxruntime==1.32.0"
fi

# A world-readable venv of Debian's python3 for external training commands
# in the sandbox (they run as nobody): scikit-learn and skl2onnx, as a
# user's train.py would import them.
TRAIN_VENV="$STATE/train-venv"
if ! "$TRAIN_VENV/bin/python" -c 'import sklearn, skl2onnx' 2>/dev/null; then
  log "installing scikit-learn 1.6.1 and skl2onnx 1.20.0 (pip, into $TRAIN_VENV)"
  /usr/bin/python3 -m venv "$TRAIN_VENV"
  "$TRAIN_VENV/bin/pip" install -q "numpy==2.2.6" "scikit-learn==1.6.1" "skl2onnx==1.20.0" "onnx==1.18.0"
fi
chmod 755 "$STATE"

# ---------------------------------------------------------------- SoftHSM2
mkdir -p "$STATE/softhsm/tokens"
cat >"$STATE/softhsm/softhsm2.conf" <<CONF
directories.tokendir = $STATE/softhsm/tokens
objectstore.backend = file
log.level = ERROR
CONF

cat >"$STATE/env" <<ENV
export CITADEL_TEST_PG_URL='postgres://postgres@127.0.0.1:$PG_PORT'
export CITADEL_TEST_PG_CA='$PGTLS/ca.pem'
export CITADEL_TEST_PG_OTHER_CA='$PGTLS/other-ca.pem'
export CITADEL_TEST_S3_TLS_ENDPOINT='https://localhost:$S3_TLS_PORT'
export CITADEL_TEST_S3_CA='$PGTLS/ca.pem'
export CITADEL_TEST_S3_ENDPOINT='http://127.0.0.1:$S3_PORT'
export CITADEL_TEST_S3_BUCKET='$BUCKET'
export AWS_ACCESS_KEY_ID=citadel-test
export AWS_SECRET_ACCESS_KEY=citadel-test-secret
export AWS_DEFAULT_REGION=us-east-1
export SOFTHSM2_CONF='$STATE/softhsm/softhsm2.conf'
export CITADEL_TEST_PKCS11_MODULE='$softhsm_module'
export CITADEL_TEST_MODEL_SIGNING='$VENV/bin/model_signing'
export CITADEL_TEST_VENV_PYTHON='$VENV/bin/python'
export CITADEL_TEST_TRAIN_VENV='$TRAIN_VENV'
export CITADEL_TEST_PROMTOOL='$(command -v promtool)'
ENV
log "ready: $STATE/env"
