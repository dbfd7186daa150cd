package topiclog_test

import (
	"context"
	"fmt"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/topiclog"
)

// Append, read in pages, and tail from a position.
func Example() {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	chat, _ := topiclog.Open(s, "chat", topiclog.Config{Writer: "alice", MaxCount: 1000})
	defer chat.Close()

	var second string
	for i, text := range []string{"hello", "how are you?", "bye"} {
		m, _ := chat.Append(ctx, []byte(text))
		if i == 1 {
			second = m.Position
		}
	}
	page, _ := chat.Read(ctx, "", 2)
	for _, m := range page.Messages {
		fmt.Println(m.Writer+":", string(m.Data))
	}
	fmt.Println("more:", page.More)

	tail, _ := chat.Tail(ctx, second)
	defer tail.Close()
	chat.Append(ctx, []byte("back again"))
	fmt.Println("tail:", string((<-tail.Messages()).Data))
	fmt.Println("tail:", string((<-tail.Messages()).Data))
	// Output:
	// alice: hello
	// alice: how are you?
	// more: true
	// tail: bye
	// tail: back again
}
