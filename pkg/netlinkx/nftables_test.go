package netlinkx_test

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flannel-registrar/flannel-registrar/pkg/netlinkx"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/netlinkxtest"
	"github.com/flannel-registrar/flannel-registrar/pkg/testing/testutil"
)

// An iptables-nft change in a namespace is announced to a subscription in
// that namespace: the rule with its table and chain, then the transaction's
// end naming the committing process. Changes in another namespace are not.
func TestNFTablesNotifications(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "iptables")
	if out, err := exec.Command("iptables", "-V").Output(); err != nil || !strings.Contains(string(out), "nf_tables") {
		t.Skipf("iptables is not iptables-nft: %s %v", out, err)
	}
	ns := testutil.NewNetns(t, "frnft")
	other := testutil.NewNetns(t, "frnft")
	sub, err := netlinkxtest.Handle(t, ns).SubscribeNFTables(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	got := make(chan []netlinkx.NFTEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			evs, err := sub.Receive()
			if err != nil {
				close(got)
				return
			}
			got <- evs
		}
	}()
	t.Cleanup(func() { sub.Close(); <-done })

	other.Run(t, "iptables", "-A", "FORWARD", "-i", "eth7", "-j", "ACCEPT")
	ns.Run(t, "iptables", "-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT")
	var rule, gen *netlinkx.NFTEvent
	deadline := time.After(5 * time.Second)
	for gen == nil || rule == nil {
		select {
		case evs, ok := <-got:
			if !ok {
				t.Fatal("subscription ended")
			}
			for _, e := range evs {
				switch {
				case e.Type == unix.NFT_MSG_NEWRULE && e.Chain == "FORWARD":
					rule = &e
				case e.Gen && rule != nil:
					gen = &e
				}
			}
		case <-deadline:
			t.Fatalf("no rule and transaction end within 5s (rule %v, gen %v)", rule, gen)
		}
	}
	if rule.Table != "filter" || rule.Family != unix.NFPROTO_IPV4 || rule.Verb() != "rule-new" {
		t.Errorf("rule event %+v: want filter/FORWARD rule-new, IPv4", *rule)
	}
	if gen.PID == 0 || !strings.HasPrefix(gen.Comm, "iptables") {
		t.Errorf("transaction end %+v: want the committing iptables process", *gen)
	}
}

// nftMsg builds an nf_tables message: nfgenmsg, then attributes.
func nftMsg(typ uint16, family uint8, attrs ...[]byte) syscall.NetlinkMessage {
	data := []byte{family, 0, 0, 0}
	for _, a := range attrs {
		data = append(data, a...)
	}
	return syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.NFNL_SUBSYS_NFTABLES<<8 | typ}, Data: data}
}

func attr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func TestDecodeNFT(t *testing.T) {
	pid := binary.BigEndian.AppendUint32(nil, 4242)
	for _, c := range []struct {
		name string
		m    syscall.NetlinkMessage
		ok   bool
		want netlinkx.NFTEvent
	}{
		{"rule", nftMsg(unix.NFT_MSG_DELRULE, unix.NFPROTO_IPV4, attr(1, cstr("filter")), attr(2, cstr("DOCKER-USER"))), true,
			netlinkx.NFTEvent{Type: unix.NFT_MSG_DELRULE, Family: unix.NFPROTO_IPV4, Table: "filter", Chain: "DOCKER-USER"}},
		{"chain", nftMsg(unix.NFT_MSG_NEWCHAIN, unix.NFPROTO_IPV4, attr(1, cstr("nat")), attr(2, make([]byte, 8)), attr(3, cstr("FLANNEL-REGISTRAR-NAT"))), true,
			netlinkx.NFTEvent{Type: unix.NFT_MSG_NEWCHAIN, Family: unix.NFPROTO_IPV4, Table: "nat", Chain: "FLANNEL-REGISTRAR-NAT"}},
		{"gen", nftMsg(unix.NFT_MSG_NEWGEN, 0, attr(1, []byte{0, 0, 0, 9}), attr(2, pid), attr(3, cstr("iptables-restor"))), true,
			netlinkx.NFTEvent{Type: unix.NFT_MSG_NEWGEN, Gen: true, PID: 4242, Comm: "iptables-restor"}},
		{"truncated attribute: no names", nftMsg(unix.NFT_MSG_NEWRULE, unix.NFPROTO_IPV4, []byte{200, 0, 1, 0, 'f'}), true,
			netlinkx.NFTEvent{Type: unix.NFT_MSG_NEWRULE, Family: unix.NFPROTO_IPV4}},
		{"other subsystem", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.NFNL_SUBSYS_IPSET<<8 | 1}, Data: make([]byte, 8)}, false, netlinkx.NFTEvent{}},
		{"short", syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWRULE}, Data: []byte{2}}, false, netlinkx.NFTEvent{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, ok := netlinkx.DecodeNFT(c.m)
			if ok != c.ok || got != c.want {
				t.Errorf("DecodeNFT = %+v, %t; want %+v, %t", got, ok, c.want, c.ok)
			}
		})
	}
}

// FuzzDecodeNFT: any message body decodes without panicking, and what it
// returns is consistent with its type.
func FuzzDecodeNFT(f *testing.F) {
	f.Add(uint16(unix.NFT_MSG_DELRULE), append([]byte{2, 0, 0, 0}, append(attr(1, cstr("filter")), attr(2, cstr("FORWARD"))...)...))
	f.Add(uint16(unix.NFT_MSG_NEWGEN), append([]byte{0, 0, 0, 0}, attr(2, []byte{0, 0, 1, 2})...))
	f.Add(uint16(unix.NFT_MSG_NEWCHAIN), []byte{2, 0, 0, 0, 255, 255, 1, 0})
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		m := syscall.NetlinkMessage{Header: syscall.NlMsghdr{Type: unix.NFNL_SUBSYS_NFTABLES<<8 | typ&0xff}, Data: data}
		e, ok := netlinkx.DecodeNFT(m)
		if ok != (len(data) >= 4) {
			t.Fatalf("ok %t for %d bytes", ok, len(data))
		}
		if ok && e.Gen != (typ&0xff == unix.NFT_MSG_NEWGEN) {
			t.Fatalf("Gen %t for type %d", e.Gen, typ&0xff)
		}
		if strings.Contains(e.Table+e.Chain+e.Comm, "\x00") {
			t.Fatalf("NUL in names: %q", fmt.Sprint(e))
		}
	})
}
