#!/usr/bin/env bash
# bench/run.sh — side-by-side benchmark of facteur against Postfix 3.x with
# PostgreSQL lookups (PostfixAdmin schema) and virtual(8) Maildir delivery.
# Read bench/README.md first. Manual: not run by CI. Root, Debian, loopback
# only (by default the measuring part runs in its own network namespace with
# nothing but lo, so no packet can leave the machine).
#
# Sizes (environment):
#   N=5000                 messages per run
#   SESSIONS="1 10 50"     concurrent SMTP sessions
#   SIZES="4096 65536"     message body bytes
#   REPS=2                 repetitions: Postfix and facteur alternate A B A B
#   LOADERS="go smtp-source"
#   RELAY_SESSIONS="1 10 50" RELAY_SIZES=4096 (RELAY_SESSIONS="" skips the relay case)
#   IDLE_CONNS=10000       idle connections held against facteur (0 skips)
#   GOBENCH=1 BENCHTIME=1s go test -bench of the hot paths (GOBENCH=0 skips)
#   MTAS="postfix facteur" DOMAINS=1000 MAILBOXES=10000 ALIASES=2000
#   RESULTS_DIR=bench/results/<UTC date>   UPDATE_README=0 (1: put the table in bench/README.md)
#   STALL=60 (give up on a run when no delivery happened for this many seconds)
#   PG_STAT_STATEMENTS=0 (1: load pg_stat_statements, dump each run's top statements into raw/)
#   FACTEUR_BIN= (a prebuilt facteur binary instead of building ./cmd/facteur)
#   FACTEUR_DB_URL_EXTRA= (extra database_url parameters for facteur, e.g. plan_cache_mode=auto; in facteur.toml)
#   PG_SETUP_SQL= (SQL run as superuser after loading, e.g. an ALTER ROLE for an experiment; recorded in env.txt)
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
WORK=${BENCH_WORK:-$BENCH/work}
export N=${N:-5000}
export SESSIONS=${SESSIONS-"1 10 50"}
export SIZES=${SIZES-"4096 65536"}
export REPS=${REPS:-2}
export LOADERS=${LOADERS-"go smtp-source"}
export RELAY_SESSIONS=${RELAY_SESSIONS-"1 10 50"}
export RELAY_SIZES=${RELAY_SIZES-4096}
export IDLE_CONNS=${IDLE_CONNS:-10000}
export GOBENCH=${GOBENCH:-1}
export BENCHTIME=${BENCHTIME:-1s}
export MTAS=${MTAS-"postfix facteur"}
export DOMAINS=${DOMAINS:-1000} MAILBOXES=${MAILBOXES:-10000} ALIASES=${ALIASES:-2000}
export STALL=${STALL:-60}
export COOLDOWN=${COOLDOWN:-3}
export UPDATE_README=${UPDATE_README:-0}
export PG_SOCK=${PG_SOCK:-/tmp/fbench-pg} PG_PORT=${PG_PORT:-5488}
export POSTFIX_PORT=${POSTFIX_PORT:-2525} FACTEUR_PORT=${FACTEUR_PORT:-2526}
export SINK_PORT=${SINK_PORT:-2527} METRICS_PORT=${METRICS_PORT:-2528}
export BENCH_NETNS=${BENCH_NETNS:-1}
export PG_STAT_STATEMENTS=${PG_STAT_STATEMENTS:-0}
export BENCH WORK REPO
if [[ -z ${RESULTS_DIR:-} ]]; then
	RESULTS_DIR=$BENCH/results/$(date -u +%Y-%m-%d)
	[[ -e $RESULTS_DIR/results.jsonl ]] && RESULTS_DIR=$RESULTS_DIR-$(date -u +%H%M%S)
fi
export RESULTS_DIR

log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Outer part: packages, binaries, then the network namespace.
outer() {
	[[ $(id -u) == 0 ]] || die "run as root (Postfix, PostgreSQL's postgres user, packages)"
	local need=()
	command -v postconf >/dev/null || need+=(postfix)
	command -v smtp-source >/dev/null || need+=(postfix)
	postconf -m 2>/dev/null | grep -qx pgsql || need+=(postfix-pgsql)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
	command -v psql >/dev/null || need+=(postgresql-client)
	command -v unshare >/dev/null || need+=(util-linux)
	command -v ip >/dev/null || need+=(iproute2)
	if ((${#need[@]})); then
		log "installing ${need[*]}"
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	fi
	# The system Postfix stays stopped: it would compete for the CPU (and
	# Debian starts it on installation).
	if postfix -c /etc/postfix status >/dev/null 2>&1; then
		log "stopping the system Postfix"
		postfix -c /etc/postfix stop >/dev/null 2>&1 || true
	fi
	id vmail >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vmail

	mkdir -p "$WORK/bin"
	# A go.mod makes bench/work a module of its own, so `go test ./...` of
	# the repository never walks the spools and Maildirs.
	[[ -e $WORK/go.mod ]] || echo 'module scratch // bench/run.sh scratch space, not Go code' >"$WORK/go.mod"
	log "building facteur-bench and facteur"
	(cd "$REPO" && go build -o "$WORK/bin/facteur-bench" ./bench/cmd/facteur-bench) || die "facteur-bench does not build"
	if [[ -n ${FACTEUR_BIN:-} ]]; then
		cp "$FACTEUR_BIN" "$WORK/bin/facteur" && log "facteur: using $FACTEUR_BIN"
	elif ! (cd "$REPO" && go build -o "$WORK/bin/facteur" ./cmd/facteur); then
		rm -f "$WORK/bin/facteur"
		[[ $MTAS == *facteur* ]] && log "facteur does not build at $(git -C "$REPO" rev-parse --short HEAD): its runs are skipped"
		MTAS=${MTAS//facteur/}
		export FACTEUR_BUILD_FAILED=1
	fi
	if [[ $GOBENCH == 1 ]]; then
		# Compiled here, run inside the namespace (which reaches no module proxy).
		rm -rf "$WORK/bin/tests" && mkdir -p "$WORK/bin/tests"
		local pkgs
		pkgs=$(cd "$REPO" && grep -rl --include='*_test.go' '^func Benchmark' . | grep -v '^./bench/work/' | xargs -n1 dirname | sort -u)
		echo "$pkgs" >"$WORK/bin/tests/packages"
		for p in $pkgs; do
			(cd "$REPO" && go test -c -o "$WORK/bin/tests/$(echo "${p#./}" | tr / _).test" "$p") || log "could not build the tests of $p"
		done
	fi
	if [[ $BENCH_NETNS == 1 ]]; then
		log "entering a private network namespace (loopback only)"
		exec unshare --net -- "$BENCH/run.sh" --inner
	fi
	inner
}

# ---------------------------------------------------------------------------
cleanup() {
	set +e
	[[ -n ${FACTEUR_PID:-} ]] && kill "$FACTEUR_PID" 2>/dev/null && wait "$FACTEUR_PID" 2>/dev/null
	[[ -n ${SINK_PID:-} ]] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	[[ -e $WORK/postfix/etc/main.cf ]] && postfix -c "$WORK/postfix/etc" stop >/dev/null 2>&1
	[[ -e $WORK/pg/data/postmaster.pid ]] && pgctl stop -m fast >/dev/null 2>&1
	true
}

PGBIN=
find_pg() {
	if command -v initdb >/dev/null; then PGBIN=$(dirname "$(readlink -f "$(command -v initdb)")")
	else PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi
}
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgctl() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" "$@"; }
psqlc() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" "$@"; }

start_pg() {
	find_pg
	mkdir -p "$WORK/pg" "$PG_SOCK"
	if [[ $(id -u) == 0 ]]; then chown postgres: "$WORK/pg" "$PG_SOCK"; fi
	chmod 755 "$PG_SOCK"
	if [[ -e $WORK/pg/data/postmaster.pid ]]; then pgctl stop -m fast >/dev/null 2>&1 || true; fi
	rm -rf "$WORK/pg/data"
	log "initdb ($("$PGBIN/postgres" --version))"
	as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >"$WORK/pg/initdb.log"
	# Durability exactly as shipped: fsync, synchronous_commit and
	# full_page_writes on (the defaults), stated so nothing can change them.
	cat >>"$WORK/pg/data/postgresql.conf" <<-EOF
		# facteur bench
		listen_addresses = ''
		unix_socket_directories = '$PG_SOCK'
		port = $PG_PORT
		fsync = on
		synchronous_commit = on
		full_page_writes = on
		max_connections = 500
		shared_buffers = 256MB
		logging_collector = off
	EOF
	if [[ $PG_STAT_STATEMENTS == 1 ]]; then
		echo "shared_preload_libraries = 'pg_stat_statements'" >>"$WORK/pg/data/postgresql.conf"
		echo "pg_stat_statements.track = all" >>"$WORK/pg/data/postgresql.conf"
		echo "pg_stat_statements.track_planning = on" >>"$WORK/pg/data/postgresql.conf"
	fi
	pgctl -l "$WORK/pg/server.log" -w -t 60 start >/dev/null
	PG_PID=$(head -1 "$WORK/pg/data/postmaster.pid")
	log "PostgreSQL up, pid $PG_PID, socket $PG_SOCK/.s.PGSQL.$PG_PORT"
}

check_durability_pg() {
	local out=$RESULTS_DIR/durability.txt bad=0
	{
		echo "# PostgreSQL settings of the bench cluster (SHOW)"
		for s in fsync synchronous_commit full_page_writes wal_sync_method wal_level shared_buffers max_connections server_version; do
			printf '%s = %s\n' "$s" "$(psqlc -U postgres -d postgres -Atc "SHOW $s")"
		done
	} >"$out"
	grep -qx 'fsync = on' "$out" || bad=1
	grep -qx 'synchronous_commit = on' "$out" || bad=1
	cat "$out" >&2
	((bad == 0)) || die "fsync and synchronous_commit must be on"
}

load_data() {
	local d=$WORK/data
	mkdir -p "$d"
	"$WORK/bin/facteur-bench" gen -out "$d" -domains "$DOMAINS" -mailboxes "$MAILBOXES" -aliases "$ALIASES" \
		-relay-domain relay.bench.test -relay-nexthop "smtp:[127.0.0.1]:$SINK_PORT"
	[[ $PG_STAT_STATEMENTS == 1 ]] && psqlc -U postgres -d postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
	psqlc -U postgres -d postgres <<-EOF
		CREATE ROLE postfix LOGIN;
		CREATE ROLE facteur LOGIN;
		CREATE DATABASE postfix;
		CREATE DATABASE facteur OWNER facteur;
	EOF
	log "loading the PostfixAdmin-shaped database"
	psqlc -U postgres -d postfix -f "$d/postfix.sql"
	write_facteur_config
	if [[ ! -x $WORK/bin/facteur ]]; then
		log "no facteur binary: the facteur database stays empty"
		return 0
	fi
	log "facteur migrate up, then the same data"
	"$WORK/bin/facteur" --config "$WORK/facteur/facteur.toml" migrate up >"$WORK/facteur/migrate.log" 2>&1 ||
		{ cat "$WORK/facteur/migrate.log" >&2; die "facteur migrate up failed"; }
	psqlc -U facteur -d facteur -f "$d/facteur.sql"
	if [[ -n ${PG_SETUP_SQL:-} ]]; then
		log "PG_SETUP_SQL: $PG_SETUP_SQL"
		psqlc -U postgres -d postgres -c "$PG_SETUP_SQL"
		echo "PG_SETUP_SQL: $PG_SETUP_SQL" >>"$RESULTS_DIR/env.txt"
	fi
	# Nothing left for autovacuum to do in the first runs, and a clean WAL.
	psqlc -U postgres -d postfix -c "VACUUM ANALYZE" >/dev/null
	psqlc -U postgres -d facteur -c "VACUUM ANALYZE" >/dev/null
	psqlc -U postgres -d postgres -c "CHECKPOINT" >/dev/null
	{
		echo "# row counts"
		echo "postfix: $(psqlc -U postgres -d postfix -Atc "SELECT 'domains=' || (SELECT count(*) FROM domain) || ' mailboxes=' || (SELECT count(*) FROM mailbox) || ' aliases=' || (SELECT count(*) FROM alias) || ' alias_domains=' || (SELECT count(*) FROM alias_domain)")"
		echo "facteur: $(psqlc -U postgres -d facteur -Atc "SELECT 'domains=' || (SELECT count(*) FROM domain) || ' mailboxes=' || (SELECT count(*) FROM mailbox) || ' aliases=' || (SELECT count(*) FROM alias) || ' alias_domains=' || (SELECT count(*) FROM alias_domain) || ' transports=' || (SELECT count(*) FROM transport)")"
	} | tee "$RESULTS_DIR/data.txt" >&2
}

# ---------------------------------------------------------------------------
# Postfix: a private instance (postfix -c DIR) with its own queue.
PFX=
setup_postfix() {
	PFX=$WORK/postfix
	[[ -e $PFX/etc/main.cf ]] && postfix -c "$PFX/etc" stop >/dev/null 2>&1 || true
	rm -rf "$PFX" "$WORK/postfix-mail"
	mkdir -p "$PFX/etc/pgsql" "$PFX/queue" "$PFX/data"
	chown postfix: "$PFX/data"
	local uid gid
	uid=$(id -u vmail) gid=$(id -g vmail)
	local conn="postgresql://postfix@/postfix?host=$PG_SOCK&port=$PG_PORT"
	# PostfixAdmin's standard query files (DOCUMENTS/POSTFIX_CONF.txt), for
	# PostgreSQL; backup MX (relay) domains are not virtual mailbox domains.
	pgmap() { printf 'hosts = %s\nuser = postfix\npassword =\ndbname = postfix\nquery = %s\n' "$conn" "$2" >"$PFX/etc/pgsql/$1.cf"; }
	pgmap virtual_domains_maps "SELECT domain FROM domain WHERE domain='%s' AND active = true AND backupmx = false"
	pgmap virtual_mailbox_maps "SELECT maildir FROM mailbox WHERE username='%s' AND active = true"
	pgmap virtual_alias_domain_mailbox_maps "SELECT maildir FROM mailbox,alias_domain WHERE alias_domain.alias_domain = '%d' and mailbox.username = '%u' || '@' || alias_domain.target_domain AND mailbox.active = true AND alias_domain.active = true"
	pgmap virtual_alias_maps "SELECT goto FROM alias WHERE address='%s' AND active = true"
	pgmap virtual_alias_domain_maps "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and alias.address = '%u' || '@' || alias_domain.target_domain AND alias.active = true AND alias_domain.active = true"
	pgmap virtual_alias_domain_catchall_maps "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and alias.address = '@' || alias_domain.target_domain AND alias.active = true AND alias_domain.active = true"
	pgmap relay_domains "SELECT domain FROM domain WHERE domain='%s' AND active = true AND backupmx = true"
	pgmap transport_maps "SELECT transport FROM domain WHERE domain='%s' AND active = true"
	chmod 640 "$PFX"/etc/pgsql/*.cf && chgrp postfix "$PFX"/etc/pgsql/*.cf
	local m="proxy:pgsql:$PFX/etc/pgsql"
	cat >"$PFX/etc/main.cf" <<-EOF
		# facteur bench: a private Postfix instance (postfix -c $PFX/etc)
		compatibility_level = 3.6
		queue_directory = $PFX/queue
		data_directory = $PFX/data
		maillog_file = $PFX/maillog
		maillog_file_prefixes = /var, /dev/stdout, $PFX
		myhostname = postfix.bench.invalid
		mydomain = bench.invalid
		myorigin = \$myhostname
		mydestination =
		local_recipient_maps =
		local_transport = error:local delivery is disabled
		alias_maps =
		alias_database =
		inet_interfaces = loopback-only
		inet_protocols = ipv4
		mynetworks = 127.0.0.0/8
		smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
		smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
		smtpd_banner = \$myhostname ESMTP
		# no DNS anywhere: no client name lookups, next hops are [address]:port
		smtpd_peername_lookup = no
		smtp_dns_support_level = disabled
		smtp_host_lookup = native
		biff = no
		append_dot_mydomain = no
		readme_directory = no
		delay_warning_time = 0
		virtual_mailbox_domains = $m/virtual_domains_maps.cf
		virtual_mailbox_maps = $m/virtual_mailbox_maps.cf, $m/virtual_alias_domain_mailbox_maps.cf
		virtual_alias_maps = $m/virtual_alias_maps.cf, $m/virtual_alias_domain_maps.cf, $m/virtual_alias_domain_catchall_maps.cf
		relay_domains = $m/relay_domains.cf
		transport_maps = $m/transport_maps.cf
		virtual_transport = virtual
		virtual_mailbox_base = $WORK/postfix-mail
		virtual_uid_maps = static:$uid
		virtual_gid_maps = static:$gid
		virtual_minimum_uid = 100
		virtual_mailbox_limit = 0
	EOF
	# master.cf: Debian's services without chroot, smtpd on one loopback
	# port only. The unix services live in this instance's queue directory.
	cat >"$PFX/etc/master.cf" <<-EOF
		127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
		pickup    unix  n       -       n       60      1       pickup
		cleanup   unix  n       -       n       -       0       cleanup
		qmgr      unix  n       -       n       300     1       qmgr
		rewrite   unix  -       -       n       -       -       trivial-rewrite
		bounce    unix  -       -       n       -       0       bounce
		defer     unix  -       -       n       -       0       bounce
		trace     unix  -       -       n       -       0       bounce
		verify    unix  -       -       n       -       1       verify
		flush     unix  n       -       n       1000?   0       flush
		proxymap  unix  -       -       n       -       -       proxymap
		proxywrite unix -       -       n       -       1       proxymap
		smtp      unix  -       -       n       -       -       smtp
		relay     unix  -       -       n       -       -       smtp
		showq     unix  n       -       n       -       -       showq
		error     unix  -       -       n       -       -       error
		retry     unix  -       -       n       -       -       error
		discard   unix  -       -       n       -       -       discard
		local     unix  -       n       n       -       -       local
		virtual   unix  -       n       n       -       -       virtual
		lmtp      unix  -       -       n       -       -       lmtp
		anvil     unix  -       -       n       -       1       anvil
		scache    unix  -       -       n       -       1       scache
		postlog   unix-dgram n  -       n       -       1       postlogd
	EOF
	"$WORK/bin/facteur-bench" prep -root "$WORK/postfix-mail" -mailboxes "$WORK/data/mailboxes.tsv" -uid "$uid" -gid "$gid"
	chmod 755 "$WORK/postfix-mail"
	# postfix(1) writes its errors to stderr only when that is a terminal:
	# script(1) gives it one.
	script -qc "postfix -c '$PFX/etc' check" /dev/null >"$PFX/check.log" 2>&1 || true
	if ! postfix -c "$PFX/etc" start >"$PFX/start.log" 2>&1; then
		cat "$PFX/check.log" "$PFX/start.log" >&2
		script -qc "postfix -c '$PFX/etc' start" /dev/null >&2 || true
		tail -20 "$PFX/maillog" >&2 2>/dev/null || true
		die "postfix start failed"
	fi
	wait_port "$POSTFIX_PORT" || die "Postfix does not listen on 127.0.0.1:$POSTFIX_PORT (see $PFX/maillog)"
	POSTFIX_PID=$(tr -d ' ' <"$PFX/queue/pid/master.pid")
	log "Postfix $(postconf -h mail_version) up, master pid $POSTFIX_PID, 127.0.0.1:$POSTFIX_PORT"
}

# ---------------------------------------------------------------------------
write_facteur_config() {
	mkdir -p "$WORK/facteur"
	cat >"$WORK/facteur/facteur.toml" <<-EOF
		# facteur bench (generated by bench/run.sh)
		database_url = "postgres:///facteur?host=$PG_SOCK&port=$PG_PORT&user=facteur${FACTEUR_DB_URL_EXTRA:+&$FACTEUR_DB_URL_EXTRA}"
		spool_dir = "$WORK/facteur-spool"
		mail_root = "$WORK/facteur-mail"
		hostname = "facteur.bench.invalid"
		node = "bench"

		[listen]
		smtp = "127.0.0.1:$FACTEUR_PORT"
		metrics = "127.0.0.1:$METRICS_PORT"

		[log]
		level = "info"
	EOF
}

start_facteur() {
	rm -rf "$WORK/facteur-spool" "$WORK/facteur-mail"
	mkdir -p "$WORK/facteur-spool"
	"$WORK/bin/facteur-bench" prep -root "$WORK/facteur-mail" -mailboxes "$WORK/data/mailboxes.tsv" -uid "$(id -u vmail)" -gid "$(id -g vmail)"
	chmod 755 "$WORK/facteur-mail"
	local roles=smtp,queue,metrics
	ulimit -n "$(ulimit -Hn)"
	"$WORK/bin/facteur" --config "$WORK/facteur/facteur.toml" serve --no-migrate --roles "$roles" \
		>"$WORK/facteur/serve.log" 2>&1 &
	FACTEUR_PID=$!
	wait_port "$FACTEUR_PORT" || { tail -20 "$WORK/facteur/serve.log" >&2; FACTEUR_PID_DEAD=1; log "facteur does not listen on 127.0.0.1:$FACTEUR_PORT"; return 1; }
	log "facteur $(git -C "$REPO" rev-parse --short HEAD) up, pid $FACTEUR_PID, 127.0.0.1:$FACTEUR_PORT (ulimit -n $(ulimit -n))"
}

start_sink() {
	rm -rf "$WORK/sink" && mkdir -p "$WORK/sink" && chown vmail: "$WORK/sink"
	# -d: one file per transaction, named by the template plus a random
	# hex number; -h: a greeting name that is neither MTA's (loop checks).
	smtp-sink -u vmail -h sink.bench.invalid -d "$WORK/sink/%H%M%S." "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.log" 2>&1 &
	SINK_PID=$!
	wait_port "$SINK_PORT" || die "smtp-sink does not listen"
}

wait_port() { # port: wait up to 30 s for a 220 greeting
	local i
	for i in $(seq 1 150); do
		if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c3 <&3 | grep -q 220" 2>/dev/null; then return 0; fi
		sleep 0.2
	done
	return 1
}

# ---------------------------------------------------------------------------
mta_args() { # mta -> run flags
	case $1 in
	postfix) echo "-addr 127.0.0.1:$POSTFIX_PORT -mta-pid $POSTFIX_PID -root $WORK/postfix-mail" ;;
	facteur) echo "-addr 127.0.0.1:$FACTEUR_PORT -mta-pid $FACTEUR_PID -root $WORK/facteur-mail" ;;
	esac
}

# one_run mta case loader sessions size rep [extra flags]
one_run() {
	local mta=$1 kase=$2 loader=$3 s=$4 z=$5 rep=$6
	shift 6
	local root_flag=() args
	args=$(mta_args "$mta")
	if [[ $kase == relay ]]; then root_flag=(-root "$WORK/sink" -sink-pid "$SINK_PID"); args=${args% -root *}; fi
	if [[ $loader == smtp-source && $mta == facteur && $s -ge 25 ]]; then
		# smtp-source connects from 127.0.0.1 only: let facteur's per-IP
		# connection rate bucket (5/s, burst 50) refill.
		sleep 10
	fi
	# Each run starts from a checkpoint: no run pays for another's dirty pages.
	psqlc -U postgres -d postgres -c "CHECKPOINT" >/dev/null || true
	sleep "$COOLDOWN"
	log "run: $mta $kase $loader sessions=$s size=$z rep=$rep n=$N"
	[[ $PG_STAT_STATEMENTS == 1 ]] && psqlc -U postgres -d postgres -Atc "SELECT pg_stat_statements_reset()" >/dev/null
	# shellcheck disable=SC2086
	"$WORK/bin/facteur-bench" run -mta "$mta" -case "$kase" -loader "$loader" -sessions "$s" -size "$z" -rep "$rep" \
		-n "$N" -mailboxes "$WORK/data/mailboxes.tsv" -pg-pid "$PG_PID" $args "${root_flag[@]}" \
		-stall "${STALL}s" -raw "$WORK/raw" -out "$RESULTS_DIR/results.jsonl" "$@" | tail -1 | summarize_line ||
		log "run failed: $mta $kase $loader sessions=$s size=$z rep=$rep"
	if [[ $PG_STAT_STATEMENTS == 1 ]]; then
		# The statements this run cost PostgreSQL, most expensive first.
		psqlc -U postgres -d postgres -c "SELECT round(s.total_exec_time::numeric, 1) AS exec_ms,
			round(s.total_plan_time::numeric, 1) AS plan_ms, s.calls, s.plans,
			round((s.total_exec_time / greatest(s.calls, 1))::numeric, 3) AS mean_exec_ms, s.rows, d.datname AS db,
			left(regexp_replace(s.query, '\s+', ' ', 'g'), 300) AS query
			FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
			WHERE d.datname = '$mta' ORDER BY s.total_exec_time + s.total_plan_time DESC LIMIT 25" \
			>"$WORK/raw/$mta-$kase-$loader-s$s-z$z-r$rep.pg_stat_statements.txt" 2>&1 || true
	fi
}

summarize_line() {
	sed -E 's/.*"mta":"([^"]*)".*"sent":([0-9]+),"failed":([0-9]+),"delivered":([0-9]+),"complete":(true|false).*"receive_rate":([0-9.]+),"e2e_rate":([0-9.]+),"lat_p50_ms":([-0-9.]+),"lat_p99_ms":([-0-9.]+).*"mta_cpu_ms_per_msg":([0-9.]+),"pg_cpu_ms_per_msg":([0-9.]+).*/  \1: sent \2 failed \3 delivered \4 complete \5 | recv \6\/s e2e \7\/s | p50 \8 ms p99 \9 ms/' >&2
}

facteur_ok=0
warm_up() { # mta: a few messages to start processes and warm caches; 0 if delivered
	local out
	out=$("$WORK/bin/facteur-bench" run -mta "$1" -n 20 -sessions 2 -size 4096 -mailboxes "$WORK/data/mailboxes.tsv" \
		$(mta_args "$1") -label "warmup-$1" -timeout 60s -stall 30s 2>&1 | tail -1)
	echo "$out" >"$WORK/raw/warmup-$1.json"
	[[ $out == *'"complete":true'* ]]
}

matrix() {
	local loader z s rep mta
	for loader in $LOADERS; do
		for z in $SIZES; do
			for s in $SESSIONS; do
				for rep in $(seq 1 "$REPS"); do
					for mta in $ACTIVE_MTAS; do one_run "$mta" mailbox "$loader" "$s" "$z" "$rep"; done
				done
			done
		done
	done
	for z in $RELAY_SIZES; do
		for s in $RELAY_SESSIONS; do
			for rep in $(seq 1 "$REPS"); do
				for mta in $ACTIVE_MTAS; do one_run "$mta" relay go "$s" "$z" "$rep"; done
			done
		done
	done
}

# facteur's own word on its durability: /metrics, where gauges named after
# durability, fsync or synchronous_commit must all be 1 (on). Until facteur
# exposes them, the same facts are read from the database session facteur
# uses and from its configuration, and the report says so.
fetch_metrics() {
	timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$METRICS_PORT; printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&3; cat <&3" 2>/dev/null
}

check_durability_facteur() {
	local out=$RESULTS_DIR/durability.txt m d verdict
	{
		echo
		echo "# facteur: /metrics on 127.0.0.1:$METRICS_PORT"
		if m=$(fetch_metrics) && [[ $m == *" 200 "* ]]; then
			printf '%s\n' "$m" >"$RESULTS_DIR/metrics-at-start.txt"
			d=$(grep -iE 'durab|fsync|synchronous_commit' <<<"$m" | grep -v '^#' || true)
			if [[ -n $d ]]; then
				echo "$d"
				if grep -qE ' 0(\.0+)?$' <<<"$d"; then verdict="FAIL: facteur reports a durability step switched off"
				else verdict="OK: every durability gauge facteur exposes is on"; fi
			else
				verdict="UNCHECKED: /metrics answers but has no durability gauge (see bench/README.md for the gauge facteur should expose)"
			fi
		else
			verdict="UNCHECKED: this build serves no /metrics"
		fi
		echo "# checked instead (from outside facteur):"
		echo "  facteur's own database session: $(psqlc -U facteur -d facteur -Atc "SELECT 'fsync=' || current_setting('fsync') || ' synchronous_commit=' || current_setting('synchronous_commit') || ' full_page_writes=' || current_setting('full_page_writes')")"
		echo "  durability-related keys in facteur.toml: $(grep -inE 'sync|durab|unsafe' "$WORK/facteur/facteur.toml" | tr '\n' ' ' || true)"
		echo "  durability switches in facteur's configuration code (cmd/facteur/config.go): $(grep -ciE 'fsync|synchronous|nosync|durab|unsafe' "$REPO/cmd/facteur/config.go" || true)"
		echo "DURABILITY (facteur /metrics): $verdict"
	} | tee -a "$out" >&2
}

go_benchmarks() {
	local out=$RESULTS_DIR/gobench.txt p bin
	: >"$out"
	export FACTEUR_TEST_DATABASE_URL="postgres:///postgres?host=$PG_SOCK&port=$PG_PORT&user=postgres"
	export FACTEUR_BENCH_DIR=$WORK
	log "go test -bench (benchtime $BENCHTIME) against the bench cluster (fsync on)"
	for p in $(cat "$WORK/bin/tests/packages"); do
		bin=$WORK/bin/tests/$(echo "${p#./}" | tr / _).test
		[[ -x $bin ]] || { echo "== $p: not built" >>"$out"; continue; }
		echo "== $p" >>"$out"
		(cd "$REPO/$p" && "$bin" -test.run '^$' -test.bench . -test.benchtime "$BENCHTIME" -test.benchmem 2>&1) >>"$out" || echo "(exit $?)" >>"$out"
	done
	grep -E '^(==|Benchmark|ok|FAIL|PASS|---)' "$out" >&2 || true
}

record_env() {
	{
		echo "date: $(date -u +%FT%TZ)"
		echo "machine: nproc=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') mem=$(awk '/MemTotal/{printf "%.0f", $2/1048576}' /proc/meminfo)GiB kernel=$(uname -r)"
		echo "loadavg at start: $(cat /proc/loadavg)"
		echo "postfix: $(postconf -h mail_version) ($(dpkg-query -W -f='${Version}' postfix 2>/dev/null))"
		echo "postgresql: $("$PGBIN/postgres" --version)"
		echo "go: $(go version 2>/dev/null || echo unknown)"
		echo "facteur: $(git -C "$REPO" rev-parse HEAD)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (dirty work tree)')"
		echo "sizes: N=$N SESSIONS='$SESSIONS' SIZES='$SIZES' REPS=$REPS LOADERS='$LOADERS' RELAY_SESSIONS='$RELAY_SESSIONS' RELAY_SIZES='$RELAY_SIZES' IDLE_CONNS=$IDLE_CONNS"
		echo "data: DOMAINS=$DOMAINS MAILBOXES=$MAILBOXES ALIASES=$ALIASES"
		echo "netns: $BENCH_NETNS"
		[[ -n ${FACTEUR_BUILD_FAILED:-} ]] && echo "facteur: does not build at this revision: runs skipped"
		[[ -n ${FACTEUR_BIN:-} ]] && echo "facteur: prebuilt binary $FACTEUR_BIN ($(sha256sum "$FACTEUR_BIN" | cut -c1-16))"
		true
	} | tee "$RESULTS_DIR/env.txt" >&2
}

inner() {
	trap cleanup EXIT
	if [[ $BENCH_NETNS == 1 ]]; then ip link set lo up; fi
	mkdir -p "$RESULTS_DIR" "$WORK/raw"
	rm -f "$WORK"/raw/*
	: >>"$RESULTS_DIR/results.jsonl"
	find_pg
	record_env
	start_pg
	check_durability_pg
	load_data
	start_sink
	ACTIVE_MTAS=
	for mta in $MTAS; do
		case $mta in
		postfix)
			setup_postfix
			if warm_up postfix; then ACTIVE_MTAS+=" postfix"; else log "Postfix did not deliver the warm-up messages: $(cat "$WORK/raw/warmup-postfix.json")"; fi
			;;
		facteur)
			if start_facteur && warm_up facteur; then ACTIVE_MTAS+=" facteur"; facteur_ok=1
			else log "facteur did not deliver the warm-up messages: its runs are skipped ($(tail -c 600 "$WORK/raw/warmup-facteur.json" 2>/dev/null))"; echo "facteur: not delivering at $(git -C "$REPO" rev-parse --short HEAD): runs skipped" >>"$RESULTS_DIR/env.txt"; fi
			;;
		esac
	done
	[[ -n ${FACTEUR_PID:-} ]] && check_durability_facteur
	[[ -n $ACTIVE_MTAS ]] || die "no MTA delivers"
	matrix
	[[ -n ${FACTEUR_PID:-} ]] && { fetch_metrics >"$RESULTS_DIR/metrics-at-end.txt" || rm -f "$RESULTS_DIR/metrics-at-end.txt"; }
	if [[ $IDLE_CONNS -gt 0 && $facteur_ok == 1 ]]; then
		log "holding $IDLE_CONNS idle connections against facteur"
		"$WORK/bin/facteur-bench" idle -addr "127.0.0.1:$FACTEUR_PORT" -n "$IDLE_CONNS" -sources 250 -pid "$FACTEUR_PID" \
			-out "$RESULTS_DIR/idle.jsonl" || log "idle test failed"
	fi
	[[ $GOBENCH == 1 ]] && go_benchmarks
	# Raw outputs: smtp-source transcripts and per-message latencies.
	if compgen -G "$WORK/raw/*" >/dev/null; then tar -C "$WORK/raw" -czf "$RESULTS_DIR/raw.tar.gz" .; fi
	cp "$PFX/etc/main.cf" "$RESULTS_DIR/postfix-main.cf" 2>/dev/null || true
	cp "$PFX/etc/master.cf" "$RESULTS_DIR/postfix-master.cf" 2>/dev/null || true
	cp "$WORK/facteur/facteur.toml" "$RESULTS_DIR/facteur.toml"
	"$WORK/bin/facteur-bench" report -results "$RESULTS_DIR/results.jsonl" -all-runs >"$RESULTS_DIR/runs.md"
	local idle_flag=()
	[[ -s $RESULTS_DIR/idle.jsonl ]] && idle_flag=(-idle "$RESULTS_DIR/idle.jsonl")
	{
		echo "# facteur vs Postfix — $(date -u +%F)"
		echo
		sed 's/^/    /' "$RESULTS_DIR/env.txt"
		grep -hE '^(fsync|synchronous_commit|full_page_writes) = |^DURABILITY' "$RESULTS_DIR/durability.txt" | sed 's/^/    /'
		echo
		"$WORK/bin/facteur-bench" report -results "$RESULTS_DIR/results.jsonl" "${idle_flag[@]}"
	} >"$RESULTS_DIR/summary.md"
	cat "$RESULTS_DIR/summary.md"
	if [[ $UPDATE_README == 1 ]]; then
		awk -v f="$RESULTS_DIR/summary.md" '
			/<!-- results:begin -->/ { print; while ((getline l < f) > 0) print l; skip = 1; next }
			/<!-- results:end -->/ { skip = 0 }
			!skip' "$BENCH/README.md" >"$BENCH/README.md.new" && mv "$BENCH/README.md.new" "$BENCH/README.md"
		log "bench/README.md updated"
	fi
	log "results in $RESULTS_DIR"
}

if [[ ${1:-} == --inner ]]; then inner; else outer; fi
