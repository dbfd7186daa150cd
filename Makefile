.PHONY: test vet fuzz bench

FUZZTIME ?= 30s

test:
	go vet ./...
	go test -race ./...

vet:
	go vet ./...

fuzz:
	go test -run '^$$' -fuzz FuzzValidateKey -fuzztime $(FUZZTIME) ./datastore/

bench:
	go test -run '^$$' -bench . -benchtime 2s ./datastore/...
