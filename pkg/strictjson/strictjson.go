// Package strictjson decodes JSON like encoding/json, after refusing the
// ambiguities encoding/json resolves silently. encoding/json matches object
// keys to struct fields ignoring case and keeps the last of duplicate keys,
// so {"Subnet":"10.0.0.0/24","subnet":"0.0.0.0/0"} decodes as 0.0.0.0/0
// while another reader (jq, etcdctl, a person) may see 10.0.0.0/24. Values
// other hosts write are input from outside the trust boundary: any such
// ambiguity is refused.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of objects and arrays accepted. The values
// this project reads are flat records with one nested object at most.
const MaxDepth = 32

// Unmarshal decodes b into v like json.Unmarshal, and first refuses b when
// one of its objects holds two keys equal ignoring case (duplicates included),
// when it nests deeper than MaxDepth, or, when v points to a struct, when a
// top-level key matches one of the struct's JSON field names only ignoring
// case (e.g. "PUBLICIP" for "PublicIP"). Unknown keys are allowed.
func Unmarshal(b []byte, v any) error {
	if err := Check(b, fieldNames(v)); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Check applies Unmarshal's key rules to b, with fields the names top-level
// keys must match exactly when they match ignoring case. b must be one valid
// JSON value (trailing data is refused, as json.Unmarshal refuses it).
//
// It validates b with json.Valid (no allocation) and then walks the valid
// text once by hand: a json.Decoder token pass cost 94 allocations for a
// flanneld lease, more than the decode itself, and the registrar checks every
// value of the prefix at a cold start.
func Check(b []byte, fields []string) error {
	if !json.Valid(b) {
		var x any
		if err := json.Unmarshal(b, &x); err != nil { // the syntax error, with its offset
			return fmt.Errorf("json: %w", err)
		}
		return errors.New("json: invalid") // not reached: Valid and Unmarshal agree
	}
	s := scanners.Get().(*scanner)
	s.b, s.i, s.fields = b, 0, fields
	err := s.value(1, true)
	// Drop what refers to b before the scanner is reused.
	clear(s.keys[:cap(s.keys)])
	clear(s.path[:cap(s.path)])
	s.b, s.fields, s.keys, s.path = nil, nil, s.keys[:0], s.path[:0]
	scanners.Put(s)
	return err
}

// scanners reuses the walk's key and path buffers: they escape (keys end up
// in error messages and the big-object map), and allocated per call they
// were 22 MB of garbage in a cold start of 10,000 leases.
var scanners = sync.Pool{New: func() any {
	return &scanner{keys: make([]key, 0, 16), path: make([]pathSeg, 0, 8)}
}}

// scanner walks text already known to be valid JSON, so it skips scalars
// and strings without checking them.
type scanner struct {
	b      []byte
	i      int
	fields []string
	keys   []key     // the keys of the open objects, innermost last
	path   []pathSeg // where the walk is, for error messages
}

type key struct {
	raw   []byte // unescaped
	ascii bool
}

type pathSeg struct {
	key   []byte
	array bool
}

// value reads one value at depth; top says it is the top-level value (whose
// keys fields applies to).
func (s *scanner) value(depth int, top bool) error {
	s.ws()
	switch s.b[s.i] {
	case '{', '[':
		if depth > MaxDepth {
			return fmt.Errorf("json: nested deeper than %d levels", MaxDepth)
		}
	}
	switch s.b[s.i] {
	case '{':
		s.i++
		first := len(s.keys)
		var seen map[string][]byte // only for big objects
		for {
			s.ws()
			if s.b[s.i] == ',' {
				s.i++
				s.ws()
			}
			if s.b[s.i] == '}' {
				s.i++
				break
			}
			k := s.key()
			s.ws()
			s.i++ // ':'
			if err := s.checkKey(k, first, &seen, top); err != nil {
				return err
			}
			s.keys = append(s.keys, k)
			s.path = append(s.path, pathSeg{key: k.raw})
			if err := s.value(depth+1, false); err != nil {
				return err
			}
			s.path = s.path[:len(s.path)-1]
		}
		s.keys = s.keys[:first]
	case '[':
		s.i++
		s.path = append(s.path, pathSeg{array: true})
		for {
			s.ws()
			if s.b[s.i] == ',' {
				s.i++
				s.ws()
			}
			if s.b[s.i] == ']' {
				s.i++
				break
			}
			if err := s.value(depth+1, false); err != nil {
				return err
			}
		}
		s.path = s.path[:len(s.path)-1]
	case '"':
		s.skipString()
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return nil
			}
			s.i++
		}
	}
	return nil
}

// bigObject is the key count from which an object's keys are looked up in a
// map instead of compared pairwise.
const bigObject = 16

// checkKey refuses k when it equals, ignoring case, a key already seen in the
// object whose keys start at first, or (top level) a field name it does not
// match exactly.
func (s *scanner) checkKey(k key, first int, seen *map[string][]byte, top bool) error {
	dup := func(prev []byte) error {
		if bytes.Equal(prev, k.raw) {
			return fmt.Errorf("json: duplicate key %q%s", k.raw, s.where())
		}
		return fmt.Errorf("json: keys %q and %q%s differ only in case", prev, k.raw, s.where())
	}
	open := s.keys[first:]
	switch {
	case *seen != nil:
		f := fold(string(k.raw))
		if prev, ok := (*seen)[f]; ok {
			return dup(prev)
		}
		(*seen)[f] = k.raw
	case len(open) >= bigObject:
		*seen = make(map[string][]byte, 2*len(open))
		for _, p := range open {
			(*seen)[fold(string(p.raw))] = p.raw
		}
		return s.checkKey(k, first, seen, top)
	default:
		for _, p := range open {
			if equalFold(p, k) {
				return dup(p.raw)
			}
		}
	}
	if top {
		for _, f := range s.fields {
			if equalFold(key{raw: []byte(f), ascii: isASCII(f)}, k) && f != string(k.raw) {
				return fmt.Errorf("json: key %q is not %q (keys are case-sensitive)", k.raw, f)
			}
		}
	}
	return nil
}

func (s *scanner) where() string {
	if len(s.path) == 0 {
		return ""
	}
	var sb strings.Builder
	for i, p := range s.path {
		switch {
		case p.array:
			sb.WriteString("[]")
		case i > 0:
			sb.WriteByte('.')
			fallthrough
		default:
			sb.Write(p.key)
		}
	}
	return " in " + sb.String()
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// skipString moves past the string at s.i and returns its text between the
// quotes, still escaped, and whether it holds an escape.
func (s *scanner) skipString() (raw []byte, escaped bool) {
	start := s.i + 1
	j := start
	for s.b[j] != '"' {
		if s.b[j] == '\\' {
			escaped = true
			j++
		}
		j++
	}
	s.i = j + 1
	return s.b[start:j], escaped
}

// key reads an object key, unescaped (keys with escapes are rare: they go
// through encoding/json, which resolves them as the decode will).
func (s *scanner) key() key {
	start := s.i
	raw, escaped := s.skipString()
	if escaped {
		var str string
		_ = json.Unmarshal(s.b[start:s.i], &str) // a valid JSON string
		raw = []byte(str)
	}
	return key{raw: raw, ascii: isASCII(string(raw))}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// equalFold says whether a and b fold to the same string; ASCII keys (all
// keys this project writes) are compared without allocating.
func equalFold(a, b key) bool {
	if a.ascii && b.ascii {
		if len(a.raw) != len(b.raw) {
			return false
		}
		for i := range a.raw {
			x, y := a.raw[i], b.raw[i]
			if 'a' <= x && x <= 'z' {
				x -= 'a' - 'A'
			}
			if 'a' <= y && y <= 'z' {
				y -= 'a' - 'A'
			}
			if x != y {
				return false
			}
		}
		return true
	}
	return fold(string(a.raw)) == fold(string(b.raw))
}

// fold maps strings that encoding/json's field matching takes for equal
// (bytes.EqualFold, e.g. "k", "K" and the Kelvin sign) to the same string,
// as encoding/json's own foldName does.
func fold(s string) string {
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			return r
		}
		for { // the smallest rune of r's fold set
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				return r2
			}
			r = r2
		}
	}, s)
}

// fieldCache maps a struct type to its field names: Unmarshal runs for every
// value read, and reflecting over the type each time was a measurable share.
var fieldCache sync.Map // reflect.Type -> []string

// fieldNames is FieldNames, cached per type; callers must not modify the result.
func fieldNames(v any) []string {
	t := reflect.TypeOf(v)
	if t == nil {
		return nil
	}
	if f, ok := fieldCache.Load(t); ok {
		return f.([]string)
	}
	f := FieldNames(v)
	fieldCache.Store(t, f)
	return f
}

// FieldNames returns the JSON names of the fields of the struct v points to
// (nil for anything else): the json tag's name, else the field's name;
// fields tagged "-" and unexported fields are left out.
func FieldNames(v any) []string {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	t = t.Elem()
	var out []string
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = sf.Name
		}
		out = append(out, name)
	}
	return out
}

// ErrTooLarge is returned (wrapped) by CheckSize.
var ErrTooLarge = errors.New("over the size cap")

// CheckSize refuses a value longer than max bytes, naming what it is.
func CheckSize(what string, b []byte, maxBytes int) error {
	if len(b) > maxBytes {
		return fmt.Errorf("%s is %d bytes, %w of %d bytes", what, len(b), ErrTooLarge, maxBytes)
	}
	return nil
}
