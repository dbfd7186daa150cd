.PHONY: test vet fuzz bench bench-store bench-replication

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

bench: bench-store bench-replication

# Every backend side by side with raw SQLite, in one run.
bench-store:
	go test -run '^$$' -bench . -benchtime $(BENCHTIME) ./bench/

# 10 peers over loopback TCP: burst, paced latency next to raw pubsub, join, bytes per write.
bench-replication:
	go test -run '^$$' -bench . -benchtime 1x ./gossip/
