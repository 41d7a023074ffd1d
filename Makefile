# crudrs — one command runs the server, one passes the tests.
#   make run [THREADS=4] [ARGS="--port 8080"]   release build + local PostgreSQL + server
#   make test                                   every test of the workspace, against a real PostgreSQL
#   make test-api                               Schemathesis against a running server and its /openapi.json
#   make cluster [N=3] / cluster-stop           N instances behind HAProxy on one PostgreSQL (see README)
#   make fuzz [FUZZ_SECS=300]                   the parser's and decoder's property tests, many cases, for a set time
#   make test-stress [RUNS=3]                   the same while every CPU is kept busy by busy loops
#   make drills / soak                          reliability and security drills, one table (soak: 10 minutes)
#   make bench / bench-health / bench-relay     benchmarks (server on CPU 1, load on CPU 0)
#   make db / db-stop                           start or stop the project-local cluster (.pg/)
#   make lint                                   rustfmt check + clippy + rustdoc with warnings denied
# With DATABASE_URL set, that database is used and no cluster is started.

THREADS ?=
ARGS ?=
CARGO ?= cargo

RUNS ?= 3

PHONY_DRILLS := drills soak
.PHONY: $(PHONY_DRILLS) run build test test-api fuzz cluster cluster-stop cluster-reload test-stress lint fmt db db-stop bench bench-health bench-upload bench-relay clean-db

build:
	$(CARGO) build --release --workspace

run: build
	scripts/with-db.sh target/release/server $(THREADS) $(ARGS)

test:
	scripts/with-db.sh $(CARGO) test --workspace

test-api:
	scripts/test-api.sh

fuzz:
	scripts/fuzz.sh

N ?= 3
cluster: build
	N=$(N) scripts/cluster.sh start

cluster-stop:
	scripts/cluster.sh stop

cluster-reload:
	scripts/cluster.sh reload

drills:
	scripts/drills.sh

soak:
	DRILL_SOAK_SECS=$${DRILL_SOAK_SECS:-600} ONLY=soak scripts/drills.sh

test-stress:
	CARGO=$(CARGO) scripts/test-stress.sh $(RUNS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps -q

fmt:
	$(CARGO) fmt --all

db:
	@scripts/pg.sh start .pg 54329

db-stop:
	scripts/pg.sh stop .pg

clean-db: db-stop
	rm -rf .pg

bench-health: build
	scripts/bench-health.sh

bench-upload: build
	scripts/bench-upload.sh

bench-relay: build
	scripts/bench-relay.sh

bench: build
	scripts/bench-health.sh
	scripts/bench-sample.sh
	scripts/bench-upload.sh
	scripts/bench-load.sh
	scripts/bench-counter.sh
	scripts/build-ref.sh
	scripts/bench-events.sh
	scripts/bench-shed.sh
	scripts/bench-limits.sh
	scripts/bench-metrics.sh
	scripts/bench-cluster.sh
	scripts/bench-relay.sh
