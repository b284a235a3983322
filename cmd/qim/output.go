package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// messageJSON is the --json form of a message: one object per line.
type messageJSON struct {
	ID          uint64 `json:"id,string"` // a string: ids exceed JavaScript's exact integers
	Seq         uint64 `json:"seq"`
	Conv        string `json:"conv"`
	From        string `json:"from"`
	FromDevice  string `json:"from_device"`
	ToUser      string `json:"to_user"`
	ToGroup     string `json:"to_group"`
	Type        string `json:"type"`
	Text        string `json:"text"`
	URL         string `json:"url"`
	Timestamp   int64  `json:"timestamp"`
	ClientMsgID string `json:"client_msg_id"`
}

// printMessage prints m, as seen by user me, on one line:
// "[@peer] from: text (#seq)", or a JSON object.
func printMessage(w io.Writer, me string, m *qimpb.Message, asJSON bool) error {
	conv := client.ConvOf(me, m).String()
	if asJSON {
		return printJSON(w, messageJSON{
			ID:          m.GetId(),
			Seq:         m.GetSeq(),
			Conv:        conv,
			From:        m.GetFromUser(),
			FromDevice:  m.GetFromDevice(),
			ToUser:      m.GetToUser(),
			ToGroup:     m.GetToGroup(),
			Type:        m.GetType().String(),
			Text:        client.Text(m),
			URL:         client.ImageURL(m),
			Timestamp:   m.GetTimestamp(),
			ClientMsgID: m.GetClientMsgId(),
		})
	}
	body := client.Text(m)
	if m.GetType() == qimpb.MessageType_IMAGE {
		body = client.ImageURL(m)
	}
	_, err := fmt.Fprintf(w, "[%s] %s: %s (#%d)\n", conv, m.GetFromUser(), body, m.GetSeq())
	return err
}

// printJSON prints v as one line of JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("qim: encode JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// printList prints one item per line, or a JSON array.
func printList(w io.Writer, items []string, asJSON bool) error {
	if asJSON {
		if items == nil {
			items = []string{}
		}
		return printJSON(w, items)
	}
	for _, it := range items {
		if _, err := fmt.Fprintln(w, it); err != nil {
			return err
		}
	}
	return nil
}

// groupJSON is the --json form of a group.
type groupJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Owner   string `json:"owner"`
	Created int64  `json:"created"`
	LastSeq uint64 `json:"last_seq"`
}

// printGroups prints "id<TAB>name<TAB>owner" lines, or a JSON array.
func printGroups(w io.Writer, groups []*qimpb.GroupInfo, asJSON bool) error {
	if asJSON {
		out := make([]groupJSON, 0, len(groups))
		for _, g := range groups {
			out = append(out, groupJSON{g.GetId(), g.GetName(), g.GetOwner(), g.GetCreated(), g.GetLastSeq()})
		}
		return printJSON(w, out)
	}
	for _, g := range groups {
		if _, err := fmt.Fprintf(w, "%s\t%s\t%s\n", g.GetId(), g.GetName(), g.GetOwner()); err != nil {
			return err
		}
	}
	return nil
}
