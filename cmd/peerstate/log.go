package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/univrs/peerstate/topiclog"
)

func logCommand() *command {
	return &command{
		name:    "log",
		args:    "append|read|tail TOPIC [MESSAGE]",
		summary: "append to, read or follow a topic's message log",
		details: `A topic log keeps messages under /topics/TOPIC/messages/, CBOR-encoded, in one
order every peer agrees on (by the writer's timestamp, then the writer).

  log append TOPIC MESSAGE   append MESSAGE ("-": stdin); prints its position
  log read TOPIC             print messages in log order, at most --limit, after
                             --after POSITION; when more follow, stderr says the
                             position to read on after
  log tail TOPIC             print the messages after --after, then new ones as
                             they arrive, until interrupted

Each message prints as its position, a tab and its data (as text when it is
UTF-8, else base64 marked "base64:"); with --json one object a line:
{"position","time","writer","data"} (or "data_base64"). The writer of an append
is the daemon's peer ID unless --writer says otherwise.`,
		minArgs: 2, maxArgs: 3,
		setup: func(m *Main, fs *flag.FlagSet) runner {
			var cf clientFlags
			cf.register(m, fs)
			after := fs.String("after", "", "read or tail after this position")
			limit := fs.Int("limit", 100, "read at most this many messages")
			asJSON := fs.Bool("json", false, "print one JSON object a message")
			writer := fs.String("writer", "", "the writer ID of an append (default: the daemon's peer ID)")
			return func(ctx context.Context, args []string) error {
				self := findCommand("log")
				action, topic := args[0], args[1]
				switch {
				case action != "append" && action != "read" && action != "tail":
					return usagef(self, "unknown log action %q: want append, read or tail", action)
				case action == "append" && len(args) != 3:
					return usagef(self, "log append takes TOPIC and MESSAGE")
				case action != "append" && len(args) != 2:
					return usagef(self, "log %s takes TOPIC only", action)
				case *limit < 1:
					return usagef(self, "--limit %d: want at least 1", *limit)
				}
				if err := topiclog.ValidateTopic(topic); err != nil {
					return usagef(self, "%v", err)
				}
				if *after != "" {
					if _, _, err := topiclog.ParsePosition(*after); err != nil {
						return usagef(self, "--after: %v", err)
					}
				}
				c, err := cf.client()
				if err != nil {
					return err
				}
				defer c.Close()
				cfg := topiclog.Config{Writer: *writer}
				if action == "append" && cfg.Writer == "" {
					st, err := c.Status(ctx)
					if err != nil {
						return failed("log append "+topic, err)
					}
					if cfg.Writer = st.ID; cfg.Writer == "" {
						return usagef(self, "the daemon runs no p2p node: give --writer")
					}
				}
				if cfg.Writer == "" {
					cfg.Writer = "reader" // reads and tails write nothing
				}
				l, err := topiclog.Open(c, topic, cfg)
				if err != nil {
					if errors.Is(err, topiclog.ErrInvalidWriter) {
						return usagef(self, "--writer: %v", err)
					}
					return err
				}
				defer l.Close()
				out := bufio.NewWriter(m.Stdout)
				defer out.Flush()
				switch action {
				case "append":
					data, err := m.readValue(args[2])
					if err != nil {
						return err
					}
					msg, err := l.Append(ctx, data)
					if err != nil {
						return failed("log append "+topic, err)
					}
					_, err = fmt.Fprintln(out, msg.Position)
					return err
				case "read":
					p, err := l.Read(ctx, *after, *limit)
					if err != nil {
						return failed("log read "+topic, err)
					}
					for _, msg := range p.Messages {
						if err := printMessage(out, msg, *asJSON); err != nil {
							return err
						}
					}
					if p.More {
						fmt.Fprintf(m.Stderr, "peerstate: more messages after %s: use --after %s\n", p.Next, p.Next)
					}
					return nil
				default:
					t, err := l.Tail(ctx, *after)
					if err != nil {
						return failed("log tail "+topic, err)
					}
					defer t.Close()
					for msg := range t.Messages() {
						if err := printMessage(out, msg, *asJSON); err != nil {
							return err
						}
						if err := out.Flush(); err != nil {
							return err
						}
					}
					if ctx.Err() != nil {
						return nil // interrupted
					}
					return failed("log tail "+topic, t.Err())
				}
			}
		},
	}
}

// messageOut is a topic message as log read --json prints it.
type messageOut struct {
	Position   string    `json:"position"`
	Time       time.Time `json:"time"`
	Writer     string    `json:"writer"`
	Data       *string   `json:"data,omitempty"`
	DataBase64 string    `json:"data_base64,omitempty"`
}

func printMessage(w *bufio.Writer, msg topiclog.Message, asJSON bool) error {
	data := msg.Data
	if data == nil {
		data = []byte{}
	}
	text, b64 := textOrBase64(data)
	if asJSON {
		return encodeJSON(json.NewEncoder(w), messageOut{Position: msg.Position, Time: msg.Time.UTC(), Writer: msg.Writer, Data: text, DataBase64: b64})
	}
	value := "base64:" + b64
	if text != nil {
		value = *text
	}
	_, err := fmt.Fprintf(w, "%s\t%s\n", msg.Position, value)
	return err
}
