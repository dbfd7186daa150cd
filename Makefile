.PHONY: test vet fuzz soak bench bench-store bench-replication bench-scale bench-check sim-large sim-model-10k sim-network-1k

FUZZTIME ?= 30s
BENCHTIME ?= 2s

test:
	go vet ./...
	go test -race ./...

vet:
	go vet ./...

# Each fuzz target in turn (go test -fuzz takes one target per run).
fuzz:
	go test -run '^$$' -fuzz '^FuzzValidateKey$$' -fuzztime $(FUZZTIME) ./datastore/
	go test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./datastore/badger/
	go test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime $(FUZZTIME) ./datastore/badger/
	go test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./datastore/etcd/
	go test -run '^$$' -fuzz '^FuzzKeyMapping$$' -fuzztime $(FUZZTIME) ./datastore/ipfsds/
	go test -run '^$$' -fuzz '^FuzzDecodeEnvelope$$' -fuzztime $(FUZZTIME) ./replica/
	go test -run '^$$' -fuzz '^FuzzDecodeMessage$$' -fuzztime $(FUZZTIME) ./gossip/
	go test -run '^$$' -fuzz '^FuzzParseTxn$$' -fuzztime $(FUZZTIME) ./api/
	go test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) ./api/
	go test -run '^$$' -fuzz '^FuzzPatternMatch$$' -fuzztime $(FUZZTIME) ./datastore/
	go test -run '^$$' -fuzz '^FuzzReadSyncFrame$$' -fuzztime $(FUZZTIME) ./gossip/
	go test -run '^$$' -fuzz '^FuzzConfigFile$$' -fuzztime $(FUZZTIME) ./cmd/peerstate/

# The reliability suite, longer than CI runs it: many more rapid sequences,
# SIGKILLs, rolling-restart rounds and flood writes. Each test logs its
# figures (-v); grep for "linearizability:", "crash:", "rolling restarts:",
# "partition/heal:", "etcd cluster:", "disk full:", "flood:".
SOAK_CHECKS ?= 1000
SOAK_KILLS ?= 50
soak:
	go test -race -count=1 -v -timeout 60m ./internal/modeltest/ -rapid.checks=$(SOAK_CHECKS) -rapid.steps=100 -model.restarts
	go test -race -count=5 -v -timeout 60m -run 'Linearizable' ./internal/linearize/
	PEERSTATE_CRASH_KILLS=$(SOAK_KILLS) PEERSTATE_ROLLING_ROUNDS=5 PEERSTATE_FLOOD_WRITES=2000 \
		go test -race -count=1 -v -timeout 60m -run 'TestCrash_|TestCluster_|TestFlood_' ./integration/
	go test -race -count=3 -v ./internal/diskfull/
	PEERSTATE_DISKFULL_NO_MOUNT=1 go test -race -count=1 -v ./internal/diskfull/

bench: bench-store bench-replication bench-scale

# Every backend side by side with etcd, raw SQLite and raw Badger, in one run.
bench-store:
	go test -run '^$$' -bench Stores -benchtime $(BENCHTIME) ./bench/

# 3 and 10 peers over loopback TCP, one and all writing: paced latency,
# sustained rate, bytes per write next to raw pubsub; joins after 10k and
# 100k missed writes.
bench-replication:
	go test -run '^$$' -bench 'Replication|Catchup' -benchtime 1x -timeout 60m ./bench/

# Get, Set and List at 10k, 100k and 1M keys; memory per key.
bench-scale:
	go test -run '^$$' -bench Scale -benchtime $(BENCHTIME) -timeout 60m ./bench/

# Every benchmark of the repository once, at small sizes (as CI runs them).
bench-check:
	go test -run '^$$' -bench . -benchtime 1x ./...

# Simulations too large for CI, measured with /usr/bin/time -v (wall time, peak RSS):
# 10,000 peers at the model level, 1,000 at the network level.
SIMTIME ?= /usr/bin/time -v
sim-large: sim-model-10k sim-network-1k

sim-model-10k:
	go build -o bin/peerstate ./cmd/peerstate
	$(SIMTIME) ./bin/peerstate sim --quiet --level model --peers 10000 --writers 50 --writes 200 \
		--window 5s --settle 15s --loss 0.05 --dup 0.02 --reorder 0.02 --sync-interval 5s --sample 1s

# The network level runs in a synctest bubble (virtual time), from the command too.
SIM_PEERS ?= 1000
sim-network-1k:
	go build -o bin/peerstate ./cmd/peerstate
	$(SIMTIME) ./bin/peerstate sim --quiet --level network --peers $(SIM_PEERS) --writers 100 --writes 200 \
		--window 5s --settle 10s --sync-interval 5s --sample 1s
