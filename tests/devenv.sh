#!/usr/bin/env bash
# Berth's development and test environment, all real parts, on loopback:
#   - a Docker Engine (Debian docker.io): reused if `docker info` answers,
#     otherwise a dockerd started by this script;
#   - a second Docker daemon, "host b", always started by this script: its
#     own socket unix:///run/berth-dev/docker-b.sock, data root, exec root,
#     pidfile and config file under $BERTH_DEV_DIR/docker-b, and a Linux
#     bridge of its own (berthb0, 10.213.0.1/24) with --iptables=false (only
#     the first daemon manages iptables); ports published on 127.0.0.1 work
#     on it through docker-proxy;
#   - three CNCF distribution registries (Debian docker-registry) run with our
#     own config files: plain HTTP on 127.0.0.1:5000, htpasswd basic auth
#     (berth / berth-pass) on 127.0.0.1:5001, and the bearer token flow on
#     127.0.0.1:5002 (`auth: token`, realm http://127.0.0.1:5003/token). The
#     token service itself is not started here: the tests run their own
#     (tests/support/token_service.rs) and push what they need through it;
#     the registry verifies its tokens with tests/fixtures/token-auth/cert.pem
#     (a test-only key pair);
#   - a PostgreSQL cluster of our own (Debian postgresql; the package's own
#     cluster is never started): data directory $BERTH_DEV_DIR/postgres/data,
#     port 127.0.0.1:5499 only, socket dir /run/berth-dev/postgres, TLS with
#     a server certificate (localhost, 127.0.0.1) from a test CA made here
#     ($BERTH_DEV_DIR/postgres/tls/ca.pem), role `berth` (password
#     berth-pg-pass, may create databases: each test makes its own), role
#     `berth_cert` that logs in with a client certificate only
#     (tls/client.pem, tls/client.key), database `berth`;
#   - the fixture images, built and pushed by Berth's own code
#     (`cargo run -q --example push-fixtures`), among them the ingress
#     image `berth/ingress:local` made from Debian's haproxy and caddy
#     (installed here, their own services never started).
#
# Usage (as root, Debian 12):  bash tests/devenv.sh up|down|status
#
# Environment:
#   BERTH_DEV_DIR             state dir (pids, logs, configs, registry storage);
#                             default /var/lib/berth-dev
#   BERTH_DEV_SKIP_FIXTURES=1 `up` does not push the fixture images
#   BERTH_DEV_FORCE_FIXTURES=1 `up` pushes them even if every tag exists
#   BERTH_DEV_DOCKERD_FLAGS   extra flags for the first dockerd, when we
#                             start it (word-split); not for host b
#
# `down` stops exactly the processes this script started (by recorded pid,
# never by name), removes containers and volumes labelled io.berth.test=1
# (on both daemons), nothing else, and deletes host b's bridge. Every wait
# is bounded.
set -euo pipefail

readonly STATE_DIR="${BERTH_DEV_DIR:-/var/lib/berth-dev}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly PACKAGES=(docker.io docker-registry busybox-static apache2-utils ca-certificates iproute2 iptables curl haproxy caddy sqlite3 util-linux systemd postgresql openssl)
readonly TEST_LABEL="io.berth.test=1"

readonly PLAIN_ADDR="127.0.0.1:5000"
readonly AUTH_ADDR="127.0.0.1:5001"
readonly AUTH_USER="berth"
readonly AUTH_PASSWORD="berth-pass"
readonly TOKEN_ADDR="127.0.0.1:5002"
readonly TOKEN_REALM="http://127.0.0.1:5003/token"
readonly TOKEN_SERVICE="berth-test-registry"
readonly TOKEN_ISSUER="berth-test-issuer"
readonly TOKEN_CERT="$REPO_ROOT/tests/fixtures/token-auth/cert.pem"

# PostgreSQL (DESIGN.md, "Test environment"; tests/support/pg.rs).
readonly PG_DIR="$STATE_DIR/postgres"
readonly PG_DATA="$PG_DIR/data"
readonly PG_TLS="$PG_DIR/tls"
readonly PG_LOG="$PG_DIR/postgres.log"
readonly PG_PORT=5499
readonly PG_SOCK_DIR="/run/berth-dev/postgres"
readonly PG_USER="berth"
readonly PG_PASSWORD="berth-pg-pass"
readonly PG_CERT_USER="berth_cert"

readonly DOCKERD_PIDFILE="$STATE_DIR/dockerd.pid"
readonly DOCKERD_LOG="$STATE_DIR/dockerd.log"
readonly DEFAULT_DOCKER_SOCK="/var/run/docker.sock"

# Host b: the second daemon (DESIGN.md, "Test environment").
readonly DOCKER_B_DIR="$STATE_DIR/docker-b"
readonly DOCKER_B_SOCK_DIR="/run/berth-dev"
readonly DOCKER_B_HOST="unix://$DOCKER_B_SOCK_DIR/docker-b.sock"
readonly DOCKER_B_PIDFILE="$DOCKER_B_DIR/dockerd.pid"
readonly DOCKER_B_LOG="$DOCKER_B_DIR/dockerd.log"
readonly DOCKER_B_BRIDGE="berthb0"
readonly DOCKER_B_BRIDGE_CIDR="10.213.0.1/24"
# Where host a's networks take their subnets from, and its default bridge
# (Swarm's overlays use 10.0.0.0/8 from the bottom, far below).
readonly DOCKER_A_POOL="10.192.0.0/12"
readonly DOCKER_A_BIP="10.191.255.1/24"

log() { printf 'devenv: %s\n' "$*" >&2; }
die() {
	printf 'devenv: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	echo "usage: $0 up|down|status" >&2
	exit 2
}

# ---------------------------------------------------------------- packages

missing_packages() {
	local pkg status
	for pkg in "${PACKAGES[@]}"; do
		status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
		if [[ "$status" != "installed" ]]; then
			printf '%s\n' "$pkg"
		fi
	done
}

install_packages() {
	local -a missing
	mapfile -t missing < <(missing_packages)
	if [[ ${#missing[@]} -eq 0 ]]; then
		return 0
	fi
	[[ "$(id -u)" -eq 0 ]] || die "packages missing (${missing[*]}) and not root; run as root"
	log "installing: ${missing[*]}"
	# Keep apt from starting daemons (docker, docker-registry's own service):
	# we run our own, with our own configs. Only add policy-rc.d if none
	# exists, and remove exactly what we added.
	local added_policy=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		added_policy=1
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || rc=$?
	if [[ "$rc" -eq 0 ]]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			"${missing[@]}" >/dev/null || rc=$?
	fi
	if [[ "$added_policy" -eq 1 ]]; then
		rm -f /usr/sbin/policy-rc.d
	fi
	[[ "$rc" -eq 0 ]] || die "apt-get failed (exit $rc)"
}

# ------------------------------------------------------------ pid helpers

# pid_alive PIDFILE MARKER: the recorded process is alive and its command
# line still contains MARKER (guards against a stale pidfile whose pid was
# reused by an unrelated process).
pid_alive() {
	local pidfile="$1" marker="$2" pid
	[[ -s "$pidfile" ]] || return 1
	pid="$(<"$pidfile")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r "/proc/$pid/cmdline" ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# stop_pid NAME PIDFILE MARKER: SIGTERM the recorded pid, wait (bounded),
# SIGKILL as last resort, remove the pidfile.
stop_pid() {
	local name="$1" pidfile="$2" marker="$3" pid i
	if ! pid_alive "$pidfile" "$marker"; then
		rm -f "$pidfile"
		return 0
	fi
	pid="$(<"$pidfile")"
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		[[ -d "/proc/$pid" ]] || break
		# a zombie whose parent has not reaped it yet is gone for our purposes
		if [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)" == "Z" ]]; then
			break
		fi
		sleep 0.5
	done
	if [[ -d "/proc/$pid" ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)" != "Z" ]]; then
		log "$name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

# ------------------------------------------------------------------ docker

docker_answers() { docker info >/dev/null 2>&1; }

# The socket a dockerd of ours listens on: DOCKER_HOST if it names a unix
# socket, the default socket otherwise.
our_docker_host() {
	local host="${DOCKER_HOST:-}"
	if [[ -z "$host" ]]; then
		echo "unix://$DEFAULT_DOCKER_SOCK"
	elif [[ "$host" == unix://* ]]; then
		echo "$host"
	else
		die "DOCKER_HOST=$host does not answer and is not a unix socket this script could serve"
	fi
}

ensure_cgroups() {
	# Docker needs cgroups mounted; without systemd nobody may have done it.
	if [[ -e /sys/fs/cgroup/cgroup.controllers || -d /sys/fs/cgroup/memory || -d /sys/fs/cgroup/unified ]]; then
		return 0
	fi
	log "no cgroup hierarchy mounted; mounting cgroup2 on /sys/fs/cgroup"
	mkdir -p /sys/fs/cgroup
	mount -t cgroup2 none /sys/fs/cgroup || die "could not mount cgroup2 on /sys/fs/cgroup"
}

dockerd_flags() {
	local host="$1"
	local -a flags=(--host "$host" --pidfile "$DOCKERD_PIDFILE")
	# Networks from a range of their own (256 pools of /20), never the
	# daemon's 31 defaults in 172.17-31/16 and 192.168/16, which host b's
	# networks (routes of this machine too) and a machine whose own routes
	# overlap them (a VM on a 172.16/12 network) share with it.
	flags+=(--default-address-pool "base=$DOCKER_A_POOL,size=20")
	# The default bridge at a fixed address of its own, outside the pool.
	flags+=(--bip "$DOCKER_A_BIP")
	# overlay2 works on this VM kind (ext4 root, overlay in the kernel); fall
	# back to vfs where the kernel has no overlayfs.
	if ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
		flags+=(--storage-driver=vfs)
	fi
	if [[ -n "${BERTH_DEV_DOCKERD_FLAGS:-}" ]]; then
		local -a extra
		read -r -a extra <<<"$BERTH_DEV_DOCKERD_FLAGS"
		flags+=("${extra[@]}")
	fi
	printf '%s\n' "${flags[@]}"
}

start_dockerd() {
	local host
	host="$(our_docker_host)"
	if pid_alive "$DOCKERD_PIDFILE" "$DOCKERD_PIDFILE"; then
		log "dockerd (pid $(<"$DOCKERD_PIDFILE")) runs but does not answer yet"
	else
		command -v dockerd >/dev/null || die "dockerd not found (package docker.io)"
		ensure_cgroups
		rm -f "$DOCKERD_PIDFILE"
		local -a flags
		mapfile -t flags < <(dockerd_flags "$host")
		log "starting dockerd ${flags[*]} (log $DOCKERD_LOG)"
		# New session: the daemon outlives this shell and its job's process group.
		setsid dockerd "${flags[@]}" >>"$DOCKERD_LOG" 2>&1 </dev/null &
	fi
	local i
	for ((i = 0; i < 120; i++)); do
		if DOCKER_HOST="$host" docker info >/dev/null 2>&1; then
			log "dockerd answers on $host (pid $(cat "$DOCKERD_PIDFILE" 2>/dev/null || echo '?'))"
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$DOCKERD_LOG" >&2 || true
	die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
}

# A real container with a published port: proves storage driver, cgroups,
# networking and iptables work on this machine. The image is imported from
# the static busybox (no registry, no internet).
smoke_test_docker() {
	local image="berth-devenv-smoke:latest" tmp cid port i body=""
	if ! docker image inspect "$image" >/dev/null 2>&1; then
		[[ -x /bin/busybox ]] || die "/bin/busybox missing (package busybox-static)"
		tmp="$(mktemp -d)"
		mkdir -p "$tmp/bin" "$tmp/www"
		cp /bin/busybox "$tmp/bin/busybox"
		echo ok >"$tmp/www/index.html"
		tar -C "$tmp" --owner=0 --group=0 -cf - . | docker import - "$image" >/dev/null
		rm -rf "$tmp"
	fi
	cid="$(docker run -d --label "$TEST_LABEL" -p 127.0.0.1::8080 "$image" \
		/bin/busybox httpd -f -p 8080 -h /www)" || die "docker cannot run a container; see $DOCKERD_LOG"
	port="$(docker port "$cid" 8080/tcp | head -n 1 | sed 's/.*://')"
	for ((i = 0; i < 40; i++)); do
		body="$(curl -fsS --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null || true)"
		[[ "$body" == "ok" ]] && break
		sleep 0.25
	done
	docker rm -f "$cid" >/dev/null
	[[ "$body" == "ok" ]] || die "a container's published port 127.0.0.1:$port did not answer (iptables/docker-proxy?); see $DOCKERD_LOG"
	log "docker runs containers and publishes ports"
}

ensure_docker() {
	if docker_answers; then
		if pid_alive "$DOCKERD_PIDFILE" "$DOCKERD_PIDFILE"; then
			log "dockerd already runs (pid $(<"$DOCKERD_PIDFILE"))"
		else
			log "using the Docker Engine that already answers (not started by us)"
		fi
		return 0
	fi
	start_dockerd
	smoke_test_docker
}

remove_test_containers() {
	docker_answers || return 0
	local ids
	ids="$(docker ps -aq --filter "label=$TEST_LABEL")"
	if [[ -n "$ids" ]]; then
		log "removing containers labelled $TEST_LABEL: $(echo "$ids" | tr '\n' ' ')"
		# shellcheck disable=SC2086 # one id per word
		docker rm -f $ids >/dev/null
	fi
	remove_test_volumes docker
}

# remove_test_volumes DOCKER_CMD…: the volumes the tests' ingress left
# (labelled like their containers); only once no container uses them.
remove_test_volumes() {
	local vols
	vols="$("$@" volume ls -q --filter "label=$TEST_LABEL")"
	if [[ -n "$vols" ]]; then
		log "removing volumes labelled $TEST_LABEL: $(echo "$vols" | tr '\n' ' ')"
		# shellcheck disable=SC2086 # one name per word
		"$@" volume rm $vols >/dev/null || true
	fi
}

# -------------------------------------------------------------- registries

registry_dir() { echo "$STATE_DIR/registry-$1"; }

# registry_answers NAME: /v2/ answers 200 (with credentials for the auth
# one); the token one answers 401 with its Bearer challenge (a token needs
# the tests' token service, which may not run).
registry_answers() {
	local name="$1" code
	case "$name" in
	plain) code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$PLAIN_ADDR/v2/" || true)" ;;
	auth) code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -u "$AUTH_USER:$AUTH_PASSWORD" "http://$AUTH_ADDR/v2/" || true)" ;;
	token)
		local headers
		headers="$(curl -s -D - -o /dev/null --max-time 2 "http://$TOKEN_ADDR/v2/" 2>/dev/null || true)"
		grep -qiF "www-authenticate: Bearer realm=\"$TOKEN_REALM\"" <<<"$headers"
		return
		;;
	*) die "unknown registry $name" ;;
	esac
	[[ "$code" == "200" ]]
}

registry_addr() {
	case "$1" in
	plain) echo "$PLAIN_ADDR" ;;
	auth) echo "$AUTH_ADDR" ;;
	token) echo "$TOKEN_ADDR" ;;
	*) die "unknown registry $1" ;;
	esac
}

write_registry_config() {
	local name="$1" addr="$2" dir
	dir="$(registry_dir "$name")"
	mkdir -p "$dir/storage"
	local auth_section=""
	if [[ "$name" == "auth" ]]; then
		# htpasswd -B (bcrypt) salts randomly: only rewrite when it no longer verifies.
		if ! htpasswd -vb "$dir/htpasswd" "$AUTH_USER" "$AUTH_PASSWORD" >/dev/null 2>&1; then
			htpasswd -Bbc "$dir/htpasswd" "$AUTH_USER" "$AUTH_PASSWORD" 2>/dev/null
		fi
		auth_section="auth:
  htpasswd:
    realm: berth-dev
    path: $dir/htpasswd"
	fi
	if [[ "$name" == "token" ]]; then
		[[ -s "$TOKEN_CERT" ]] || die "$TOKEN_CERT missing (test token signing certificate)"
		cp "$TOKEN_CERT" "$dir/token-cert.pem.new"
		mv "$dir/token-cert.pem.new" "$dir/token-cert.pem"
		auth_section="auth:
  token:
    realm: $TOKEN_REALM
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $dir/token-cert.pem"
	fi
	cat >"$dir/config.yml.new" <<EOF
# Written by tests/devenv.sh; do not edit (rewritten on every up).
version: 0.1
log:
  level: info
  fields:
    service: berth-dev-registry-$name
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $addr
  secret: berth-dev-$name
  headers:
    X-Content-Type-Options: [nosniff]
# Manifests may name foreign (non-distributable) layers by URL: the huge
# fixture claims >10 GB that way without storing it. Without an allow list
# the registry rejects every layer URL.
validation:
  manifests:
    urls:
      allow:
        - ^https?://
$auth_section
EOF
	mv "$dir/config.yml.new" "$dir/config.yml"
}

ensure_registry() {
	local name="$1" addr="$2" dir pidfile
	dir="$(registry_dir "$name")"
	pidfile="$dir/registry.pid"
	if pid_alive "$pidfile" "$dir/config.yml" && registry_answers "$name"; then
		log "registry $name already answers on $addr (pid $(<"$pidfile"))"
		return 0
	fi
	if ! pid_alive "$pidfile" "$dir/config.yml"; then
		if curl -s -o /dev/null --max-time 2 "http://$addr/v2/"; then
			die "something not started by this script already listens on $addr (the docker-registry package's own service?); stop it first"
		fi
		command -v docker-registry >/dev/null || die "docker-registry not found (package docker-registry)"
		write_registry_config "$name" "$addr"
		log "starting registry $name on $addr (log $dir/registry.log)"
		# The shell writes its own pid, then execs the registry under the same pid.
		# shellcheck disable=SC2016 # expanded by the inner shell
		setsid bash -c 'echo $$ >"$1"; exec docker-registry serve "$2"' _ "$pidfile" "$dir/config.yml" \
			>>"$dir/registry.log" 2>&1 </dev/null &
	fi
	local i
	for ((i = 0; i < 60; i++)); do
		if registry_answers "$name"; then
			log "registry $name answers on $addr (pid $(<"$pidfile"))"
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$dir/registry.log" >&2 || true
	die "registry $name did not answer on $addr within 30 s; see $dir/registry.log"
}

# -------------------------------------------------------------- postgresql

pg_bin() {
	local dir
	dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
	[[ -n "$dir" ]] || die "PostgreSQL binaries not found under /usr/lib/postgresql (package postgresql)"
	echo "$dir"
}

as_postgres() { runuser -u postgres -- "$@"; }

pg_answers() { as_postgres "$(pg_bin)/pg_isready" -q -h "$PG_SOCK_DIR" -p "$PG_PORT" 2>/dev/null; }

# The test CA, the server certificate (localhost, 127.0.0.1) and the client
# certificate of $PG_CERT_USER; made once, kept across restarts.
ensure_pg_tls() {
	[[ -s "$PG_TLS/server.key" && -s "$PG_TLS/client.key" ]] && return 0
	log "making the PostgreSQL test CA and certificates in $PG_TLS"
	rm -rf "$PG_TLS"
	mkdir -p "$PG_TLS"
	(
		cd "$PG_TLS"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
			-subj "/CN=Berth test PostgreSQL CA" -keyout ca.key -out ca.pem 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile server.ext -out server.pem 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-subj "/CN=$PG_CERT_USER" -keyout client.key.pem -out client.csr 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >client.ext
		openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile client.ext -out client.pem 2>/dev/null
		# PKCS#8, the form every TLS library reads.
		openssl pkcs8 -topk8 -nocrypt -in client.key.pem -out client.key
		rm -f ./*.csr ./*.ext client.key.pem
	)
	chown postgres:postgres "$PG_TLS/server.key" "$PG_TLS/server.pem"
	chmod 0600 "$PG_TLS/server.key" "$PG_TLS/ca.key" "$PG_TLS/client.key"
	chmod 0644 "$PG_TLS/ca.pem" "$PG_TLS/server.pem" "$PG_TLS/client.pem"
	chmod 0755 "$PG_TLS"
}

init_pg_cluster() {
	[[ -s "$PG_DATA/PG_VERSION" ]] && return 0
	log "creating the PostgreSQL cluster in $PG_DATA"
	mkdir -p "$PG_DATA"
	chown postgres:postgres "$PG_DIR" "$PG_DATA"
	chmod 0700 "$PG_DATA"
	as_postgres "$(pg_bin)/initdb" -D "$PG_DATA" -U postgres --auth-local=peer \
		--auth-host=reject -E UTF8 --locale=C.UTF-8 >/dev/null
	cat >"$PG_DATA/pg_hba.conf" <<EOF
# Written by tests/devenv.sh.
local   all      postgres                     peer
local   all      all                          scram-sha-256
hostssl all      $PG_CERT_USER  127.0.0.1/32  cert
host    all      $PG_USER       127.0.0.1/32  scram-sha-256
host    all      all            127.0.0.1/32  reject
EOF
	chown postgres:postgres "$PG_DATA/pg_hba.conf"
}

start_pg() {
	mkdir -p "$PG_SOCK_DIR"
	chown postgres:postgres "$PG_SOCK_DIR"
	if ss -ltn "sport = :$PG_PORT" 2>/dev/null | grep -q LISTEN; then
		die "something not started by this script already listens on port $PG_PORT; stop it first"
	fi
	log "starting PostgreSQL on 127.0.0.1:$PG_PORT (log $PG_LOG)"
	touch "$PG_LOG"
	chown postgres:postgres "$PG_LOG"
	# fsync off: a test cluster, rebuilt at will; never for real data.
	as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start -o \
		"-p $PG_PORT -k $PG_SOCK_DIR -c listen_addresses=127.0.0.1 -c ssl=on \
		-c ssl_cert_file=$PG_TLS/server.pem -c ssl_key_file=$PG_TLS/server.key \
		-c ssl_ca_file=$PG_TLS/ca.pem -c max_connections=300 -c fsync=off \
		-c synchronous_commit=off -c full_page_writes=off" >/dev/null ||
		{
			tail -n 20 "$PG_LOG" >&2 || true
			die "PostgreSQL did not start; see $PG_LOG"
		}
}

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK_DIR" -p "$PG_PORT" -d postgres "$@"; }

ensure_pg_roles() {
	psql_admin >/dev/null <<EOF
SELECT 'CREATE ROLE $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER')\gexec
ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE ROLE $PG_CERT_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_CERT_USER')\gexec
ALTER ROLE $PG_CERT_USER LOGIN CREATEDB;
SELECT 'CREATE DATABASE berth OWNER $PG_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'berth')\gexec
EOF
}

ensure_pg() {
	ensure_pg_tls
	init_pg_cluster
	if pg_answers; then
		log "PostgreSQL already answers on 127.0.0.1:$PG_PORT"
	else
		start_pg
	fi
	ensure_pg_roles
	log "PostgreSQL answers on 127.0.0.1:$PG_PORT (roles $PG_USER, $PG_CERT_USER; CA $PG_TLS/ca.pem)"
}

# Drops the databases the tests made (berth_t_*), never any other.
drop_test_databases() {
	pg_answers || return 0
	psql_admin -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'berth\_t\_%'" |
		while read -r db; do
			if [[ -n "$db" ]]; then psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; fi
		done
}

stop_pg() {
	[[ -s "$PG_DATA/PG_VERSION" ]] || return 0
	pg_answers || return 0
	log "stopping PostgreSQL ($PG_DATA)"
	as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || true
}

# ---------------------------------------------------------------- fixtures

# fixtures_present: every fixture tag answers (contents are checked by the
# tests, which push again and compare digests).
fixtures_present() {
	local accept="application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
	local tag code
	for tag in demo:v1 demo:v2 multi:latest arm64-only:latest unhealthy:latest crash:latest huge:latest ingress:local; do
		code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -I -H "Accept: $accept" \
			"http://$PLAIN_ADDR/v2/berth/${tag%%:*}/manifests/${tag#*:}" || true)"
		[[ "$code" == "200" ]] || return 1
	done
	code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -I -H "Accept: $accept" \
		-u "$AUTH_USER:$AUTH_PASSWORD" "http://$AUTH_ADDR/v2/berth/private/manifests/v1" || true)"
	[[ "$code" == "200" ]]
}

push_fixtures() {
	if [[ "${BERTH_DEV_SKIP_FIXTURES:-0}" == "1" ]]; then
		log "BERTH_DEV_SKIP_FIXTURES=1: not pushing fixture images"
		return 0
	fi
	if [[ "${BERTH_DEV_FORCE_FIXTURES:-0}" != "1" ]] && fixtures_present; then
		log "fixture images already in the registries (BERTH_DEV_FORCE_FIXTURES=1 re-pushes)"
		return 0
	fi
	if ! command -v cargo >/dev/null; then
		[[ -x "$HOME/.cargo/bin/cargo" ]] || die "cargo not found; install Rust or set BERTH_DEV_SKIP_FIXTURES=1"
		PATH="$HOME/.cargo/bin:$PATH"
	fi
	log "pushing fixture images (cargo run -q --example push-fixtures)"
	(cd "$REPO_ROOT" && cargo run -q --example push-fixtures) ||
		die "pushing fixture images failed (if the crate does not build right now, retry later or set BERTH_DEV_SKIP_FIXTURES=1)"
}

# ------------------------------------------------------------------ host b

docker_b() { docker -H "$DOCKER_B_HOST" "$@"; }
docker_b_answers() { docker_b info >/dev/null 2>&1; }

# The bridge host b's default network uses; created once, reused by `up`.
ensure_bridge_b() {
	if ! ip link show "$DOCKER_B_BRIDGE" >/dev/null 2>&1; then
		# Refuse a range something else on this machine already routes.
		if ip -4 route show | grep -qF "${DOCKER_B_BRIDGE_CIDR%.*}."; then
			die "the range of $DOCKER_B_BRIDGE_CIDR is already routed here: $(ip -4 route show | grep -F "${DOCKER_B_BRIDGE_CIDR%.*}.")"
		fi
		log "creating bridge $DOCKER_B_BRIDGE ($DOCKER_B_BRIDGE_CIDR) for host b"
		ip link add "$DOCKER_B_BRIDGE" type bridge
	fi
	if ! ip -4 addr show dev "$DOCKER_B_BRIDGE" | grep -qF "inet $DOCKER_B_BRIDGE_CIDR "; then
		ip addr add "$DOCKER_B_BRIDGE_CIDR" dev "$DOCKER_B_BRIDGE"
	fi
	ip link set "$DOCKER_B_BRIDGE" up
}

dockerd_b_flags() {
	local -a flags=(
		--host "$DOCKER_B_HOST"
		--pidfile "$DOCKER_B_PIDFILE"
		--data-root "$DOCKER_B_DIR/data"
		--exec-root "$DOCKER_B_DIR/exec"
		# our own (empty) config, never /etc/docker/daemon.json
		--config-file "$DOCKER_B_DIR/daemon.json"
		--bridge "$DOCKER_B_BRIDGE"
		--iptables=false
		# No --default-address-pool here: a dockerd started with one
		# deletes the machine's docker0 (host a's) so it can be recreated
		# from the pool. Host b keeps Docker's default pools, which host
		# a's networks no longer take (see dockerd_flags).
	)
	if ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
		flags+=(--storage-driver=vfs)
	fi
	printf '%s\n' "${flags[@]}"
}

# start_dockerd_b: starts host b unless it answers; sets DOCKER_B_STARTED=1
# when it started it (not called as a condition, so `set -e` holds inside).
DOCKER_B_STARTED=0
start_dockerd_b() {
	if docker_b_answers; then
		if pid_alive "$DOCKER_B_PIDFILE" "$DOCKER_B_PIDFILE"; then
			log "dockerd b already runs (pid $(<"$DOCKER_B_PIDFILE"))"
			return 0
		fi
		die "something not started by this script ($STATE_DIR) answers on $DOCKER_B_HOST; stop it first"
	fi
	if pid_alive "$DOCKER_B_PIDFILE" "$DOCKER_B_PIDFILE"; then
		log "dockerd b (pid $(<"$DOCKER_B_PIDFILE")) runs but does not answer yet"
	else
		command -v dockerd >/dev/null || die "dockerd not found (package docker.io)"
		ensure_cgroups
		ensure_bridge_b
		mkdir -p "$DOCKER_B_DIR/data" "$DOCKER_B_DIR/exec" "$DOCKER_B_SOCK_DIR"
		[[ -s "$DOCKER_B_DIR/daemon.json" ]] || echo '{}' >"$DOCKER_B_DIR/daemon.json"
		rm -f "$DOCKER_B_PIDFILE"
		local -a flags
		mapfile -t flags < <(dockerd_b_flags)
		log "starting dockerd b ${flags[*]} (log $DOCKER_B_LOG)"
		setsid dockerd "${flags[@]}" >>"$DOCKER_B_LOG" 2>&1 </dev/null &
		DOCKER_B_STARTED=1
	fi
	local i
	for ((i = 0; i < 120; i++)); do
		if docker_b_answers; then
			log "dockerd b answers on $DOCKER_B_HOST (pid $(cat "$DOCKER_B_PIDFILE" 2>/dev/null || echo '?'))"
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$DOCKER_B_LOG" >&2 || true
	die "dockerd b did not answer within 60 s; see $DOCKER_B_LOG"
}

# A published port on 127.0.0.1 answers on host b: the demo fixture pulled
# from the plain registry (the bridge, docker-proxy and pulls from loopback
# registries all work without iptables).
smoke_test_docker_b() {
	local image="$PLAIN_ADDR/berth/demo:v1" cid port i body=""
	docker_b pull -q "$image" >/dev/null ||
		die "host b cannot pull $image (are the fixtures pushed?); see $DOCKER_B_LOG"
	cid="$(docker_b run -d --label "$TEST_LABEL" -p 127.0.0.1::8080 "$image")" ||
		die "host b cannot run a container; see $DOCKER_B_LOG"
	port="$(docker_b port "$cid" 8080/tcp | head -n 1 | sed 's/.*://')"
	for ((i = 0; i < 40; i++)); do
		body="$(curl -fsS --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null || true)"
		[[ "$body" == "berth demo v1" ]] && break
		sleep 0.25
	done
	docker_b rm -f "$cid" >/dev/null
	[[ "$body" == "berth demo v1" ]] || die "host b: a container's published port 127.0.0.1:$port did not answer; see $DOCKER_B_LOG"
	log "host b runs containers and publishes ports on 127.0.0.1"
}

ensure_docker_b() {
	start_dockerd_b
	if [[ "$DOCKER_B_STARTED" -eq 1 ]]; then
		if [[ "${BERTH_DEV_SKIP_FIXTURES:-0}" == "1" ]] && ! fixtures_present; then
			log "BERTH_DEV_SKIP_FIXTURES=1 and no fixtures: not smoke-testing host b"
		else
			smoke_test_docker_b
		fi
	fi
}

remove_test_containers_b() {
	docker_b_answers || return 0
	local ids
	ids="$(docker_b ps -aq --filter "label=$TEST_LABEL")"
	if [[ -n "$ids" ]]; then
		log "removing containers labelled $TEST_LABEL on host b: $(echo "$ids" | tr '\n' ' ')"
		# shellcheck disable=SC2086 # one id per word
		docker_b rm -f $ids >/dev/null
	fi
	remove_test_volumes docker_b
}

stop_docker_b() {
	remove_test_containers_b
	stop_pid "dockerd b" "$DOCKER_B_PIDFILE" "$DOCKER_B_PIDFILE"
	if ip link show "$DOCKER_B_BRIDGE" >/dev/null 2>&1; then
		log "deleting bridge $DOCKER_B_BRIDGE"
		ip link del "$DOCKER_B_BRIDGE" || true
	fi
}

# ---------------------------------------------------------------- commands

# A dockerd started with `--bridge none` deletes an existing docker0; the
# daemon that owns it then cannot start containers on the default bridge
# until it is restarted. Put the bridge back as the daemon recorded it.
heal_default_bridge() {
	local name subnet gateway prefix
	name=$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null) || return 0
	[[ -n "$name" ]] || return 0
	ip link show "$name" >/dev/null 2>&1 && return 0
	subnet=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}')
	gateway=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
	[[ -n "$subnet" && -n "$gateway" ]] || return 0
	prefix=${subnet#*/}
	log "default bridge $name is missing; recreating it ($gateway/$prefix)"
	ip link add "$name" type bridge
	ip addr add "$gateway/$prefix" dev "$name"
	ip link set "$name" up
}

# What must already be on the machine (the README's "Before you start").
check_prerequisites() {
	[[ "$(id -u)" -eq 0 ]] || die "run as root (starts dockerd, installs packages)"
	command -v apt-get >/dev/null || die "apt-get not found: Berth's dev environment needs Debian 12 (bookworm)"
	if [[ -r /etc/os-release ]] && ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; then
		log "warning: this is not Debian 12 (bookworm); the packages may differ"
	fi
	command -v terraform >/dev/null ||
		die "terraform not found on PATH: install terraform >= 1.11 (https://developer.hashicorp.com/terraform/install), e.g. into /usr/local/bin"
	local version
	version="$(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([0-9.]*\)".*/\1/p')"
	local major minor
	IFS=. read -r major minor _ <<<"${version:-0.0.0}"
	if ((major < 1 || (major == 1 && minor < 11))); then
		die "terraform ${version:-of unknown version} is too old: Berth needs >= 1.11 (plugin protocol 6.8)"
	fi
	command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (https://rustup.rs)"
}

cmd_up() {
	check_prerequisites
	install_packages
	mkdir -p "$STATE_DIR"
	ensure_docker
	heal_default_bridge
	ensure_registry plain "$PLAIN_ADDR"
	ensure_registry auth "$AUTH_ADDR"
	ensure_registry token "$TOKEN_ADDR"
	push_fixtures
	ensure_docker_b
	ensure_pg
	log "up: docker, docker b ($DOCKER_B_HOST), postgresql 127.0.0.1:$PG_PORT, registry $PLAIN_ADDR (plain), registry $AUTH_ADDR ($AUTH_USER/$AUTH_PASSWORD), registry $TOKEN_ADDR (bearer tokens from $TOKEN_REALM, started by the tests)"
}

cmd_down() {
	remove_test_containers
	stop_docker_b
	drop_test_databases
	stop_pg
	local name dir
	for name in token auth plain; do
		dir="$(registry_dir "$name")"
		stop_pid "registry $name" "$dir/registry.pid" "$dir/config.yml"
	done
	if pid_alive "$DOCKERD_PIDFILE" "$DOCKERD_PIDFILE"; then
		stop_pid dockerd "$DOCKERD_PIDFILE" "$DOCKERD_PIDFILE"
	elif docker_answers; then
		log "leaving the Docker Engine running (not started by us)"
	fi
	log "down"
}

cmd_status() {
	local ok=0 pid dir name addr
	if docker_answers; then
		if pid_alive "$DOCKERD_PIDFILE" "$DOCKERD_PIDFILE"; then
			echo "docker: answering, dockerd pid $(<"$DOCKERD_PIDFILE") (started by devenv)"
		else
			echo "docker: answering (not started by devenv)"
		fi
	else
		echo "docker: NOT answering"
		ok=1
	fi
	if docker_b_answers && pid_alive "$DOCKER_B_PIDFILE" "$DOCKER_B_PIDFILE"; then
		echo "docker b: answering on $DOCKER_B_HOST, dockerd pid $(<"$DOCKER_B_PIDFILE") (started by devenv)"
	elif docker_b_answers; then
		echo "docker b: something NOT started by devenv ($STATE_DIR) answers on $DOCKER_B_HOST"
		ok=1
	else
		echo "docker b: NOT answering on $DOCKER_B_HOST"
		ok=1
	fi
	if pg_answers; then
		echo "postgresql: answering on 127.0.0.1:$PG_PORT ($PG_DATA)"
	else
		echo "postgresql: NOT answering on 127.0.0.1:$PG_PORT"
		ok=1
	fi
	for name in plain auth token; do
		dir="$(registry_dir "$name")"
		addr="$(registry_addr "$name")"
		pid="-"
		if pid_alive "$dir/registry.pid" "$dir/config.yml"; then pid="$(<"$dir/registry.pid")"; fi
		if registry_answers "$name" && [[ "$pid" != "-" ]]; then
			echo "registry $name: answering on http://$addr, pid $pid"
		elif [[ "$pid" == "-" ]] && curl -s -o /dev/null --max-time 2 "http://$addr/v2/"; then
			echo "registry $name: something NOT started by devenv ($STATE_DIR) listens on $addr"
			ok=1
		else
			echo "registry $name: NOT answering on http://$addr (pid $pid)"
			ok=1
		fi
	done
	return "$ok"
}

main() {
	[[ $# -eq 1 ]] || usage
	case "$1" in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	*) usage ;;
	esac
}

main "$@"
