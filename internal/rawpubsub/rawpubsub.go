// Package rawpubsub builds gossipsub wire frames by hand, for tests of
// hostile peers that push messages without running pubsub.
package rawpubsub

import (
	"encoding/binary"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/proto"
)

// Frame is one length-prefixed RPC publishing data on topic under sequence
// number seq, signed by key as the key's own pubsub would sign it: what a
// gossipsub stream carries.
func Frame(key crypto.PrivKey, topic string, data []byte, seq uint64) ([]byte, error) {
	from, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	seqno := make([]byte, 8)
	binary.BigEndian.PutUint64(seqno, seq)
	msg := &pb.Message{From: []byte(from), Data: data, Seqno: seqno, Topic: &topic}
	unsigned, err := proto.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if msg.Signature, err = key.Sign(append([]byte(pubsub.SignPrefix), unsigned...)); err != nil {
		return nil, err
	}
	rpc, err := proto.Marshal(&pb.RPC{Publish: []*pb.Message{msg}})
	if err != nil {
		return nil, err
	}
	return append(varint.ToUvarint(uint64(len(rpc))), rpc...), nil
}
