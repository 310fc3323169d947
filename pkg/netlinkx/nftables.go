package netlinkx

// This file: nf_tables change notifications (NETLINK_NETFILTER, group
// NFNLGRP_NFTABLES), decoded only as far as a watcher needs to tell which
// table changed and who committed the change. iptables-nft (what Debian and
// Docker use by default) changes rules through nf_tables, so every
// "iptables -D …" is announced here; iptables-legacy changes are not.

import (
	"encoding/binary"
	"fmt"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NFTEvent is one nf_tables notification.
type NFTEvent struct {
	// Type is the message type (unix.NFT_MSG_NEWRULE, …).
	Type uint16
	// Family is the nf_tables family (unix.NFPROTO_IPV4 for iptables).
	Family uint8
	// Table and Chain name the object's table and chain when the message
	// carries them ("" otherwise).
	Table, Chain string
	// Gen marks NFT_MSG_NEWGEN, the last message of every committed
	// transaction (one iptables or iptables-restore run); PID and Comm are
	// the committing process (its PID as the kernel's initial PID namespace
	// sees it).
	Gen  bool
	PID  uint32
	Comm string
}

// Verb is the event's type as nft monitor prints it ("rule-del",
// "chain-new", …).
func (e NFTEvent) Verb() string {
	switch e.Type {
	case unix.NFT_MSG_NEWTABLE:
		return "table-new"
	case unix.NFT_MSG_DELTABLE:
		return "table-del"
	case unix.NFT_MSG_NEWCHAIN:
		return "chain-new"
	case unix.NFT_MSG_DELCHAIN:
		return "chain-del"
	case unix.NFT_MSG_NEWRULE:
		return "rule-new"
	case unix.NFT_MSG_DELRULE:
		return "rule-del"
	case unix.NFT_MSG_NEWSET:
		return "set-new"
	case unix.NFT_MSG_DELSET:
		return "set-del"
	case unix.NFT_MSG_NEWSETELEM:
		return "element-new"
	case unix.NFT_MSG_DELSETELEM:
		return "element-del"
	case unix.NFT_MSG_NEWGEN:
		return "gen"
	}
	return fmt.Sprintf("msg-%d", e.Type)
}

// Attribute numbers shared by every nf_tables object message: attribute 1
// is the table's name for tables, chains, rules, sets, set elements,
// objects and flowtables alike.
const (
	sizeofNfgenmsg = 4      // struct nfgenmsg: family, version, res_id
	nlaTypeMask    = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
	nftaTable      = 1
	nftaRuleChain  = unix.NFTA_RULE_CHAIN
	nftaChainName  = unix.NFTA_CHAIN_NAME
)

// DecodeNFT decodes one netlink message of the nf_tables subsystem; ok is
// false for anything else (or a message too short to carry nfgenmsg).
// Attributes it cannot parse leave Table/Chain empty: the caller then
// treats the event as "some table changed".
func DecodeNFT(m syscall.NetlinkMessage) (e NFTEvent, ok bool) {
	if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < sizeofNfgenmsg {
		return NFTEvent{}, false
	}
	e = NFTEvent{Type: m.Header.Type & 0xff, Family: m.Data[0]}
	attrs := parseAttrs(m.Data[sizeofNfgenmsg:])
	if e.Type == unix.NFT_MSG_NEWGEN {
		e.Gen = true
		for _, a := range attrs {
			switch a.typ {
			case unix.NFTA_GEN_PROC_PID:
				if len(a.value) >= 4 {
					e.PID = binary.BigEndian.Uint32(a.value)
				}
			case unix.NFTA_GEN_PROC_NAME:
				e.Comm = cString(a.value)
			}
		}
		return e, true
	}
	for _, a := range attrs {
		switch t := a.typ; {
		case t == nftaTable:
			e.Table = cString(a.value)
		case t == nftaRuleChain && (e.Type == unix.NFT_MSG_NEWRULE || e.Type == unix.NFT_MSG_DELRULE):
			e.Chain = cString(a.value)
		case t == nftaChainName && (e.Type == unix.NFT_MSG_NEWCHAIN || e.Type == unix.NFT_MSG_DELCHAIN):
			e.Chain = cString(a.value)
		}
	}
	return e, true
}

// attr is one netlink attribute: its type (without the flag bits) and
// payload.
type attr struct {
	typ   uint16
	value []byte
}

// parseAttrs splits netlink attributes, stopping at the first malformed
// one. The library's parser panics on a length past the buffer (found by
// FuzzDecodeNFT); the kernel never sends one, but a decoder must not crash
// the daemon on any input.
func parseAttrs(b []byte) []attr {
	var out []attr
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			break
		}
		out = append(out, attr{typ: binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask, value: b[4:l]})
		l = (l + 3) &^ 3 // attributes are 4-byte aligned; the last may be unpadded
		if l >= len(b) {
			break
		}
		b = b[l:]
	}
	return out
}

func cString(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\x00")
	return s
}

// NFTSubscription receives nf_tables notifications of one namespace.
type NFTSubscription struct {
	s *nl.NetlinkSocket
}

// SubscribeNFTables subscribes to the nf_tables notifications of the
// handle's namespace, with a receive buffer of rcvbuf bytes (forced past
// rmem_max, which needs CAP_NET_ADMIN; 0: the system default). A kernel
// without nf_tables still subscribes, and never sends anything.
func (h *Handle) SubscribeNFTables(rcvbuf int) (*NFTSubscription, error) {
	s, err := nl.SubscribeAt(h.ns, netns.None(), unix.NETLINK_NETFILTER, unix.NFNLGRP_NFTABLES)
	if err != nil {
		return nil, fmt.Errorf("subscribe to nf_tables notifications: %w", err)
	}
	if rcvbuf > 0 {
		if err := s.SetReceiveBufferSize(rcvbuf, true); err != nil {
			if err := s.SetReceiveBufferSize(rcvbuf, false); err != nil {
				s.Close()
				return nil, fmt.Errorf("nf_tables subscription receive buffer: %w", err)
			}
		}
	}
	return &NFTSubscription{s: s}, nil
}

// Receive blocks until the next notifications arrive (or Close is called:
// then it returns an error). ENOBUFS means the kernel dropped some: the
// caller must assume anything changed.
func (s *NFTSubscription) Receive() ([]NFTEvent, error) {
	msgs, _, err := s.s.Receive()
	if err != nil {
		return nil, fmt.Errorf("receive nf_tables notifications: %w", err)
	}
	out := make([]NFTEvent, 0, len(msgs))
	for _, m := range msgs {
		if e, ok := DecodeNFT(m); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Close ends the subscription; a Receive in progress returns.
func (s *NFTSubscription) Close() { s.s.Close() }
