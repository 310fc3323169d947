package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type rec struct {
	Subnet   string `json:"Subnet"`
	PublicIP string `json:"PublicIP"`
	Data     json.RawMessage
	skipped  int    //nolint:unused // unexported fields are not JSON fields
	Ignored  string `json:"-"`
}

func TestUnmarshalRefusesAmbiguity(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{`{"Subnet":"a","Subnet":"b"}`, `duplicate key "Subnet"`},
		{`{"Subnet":"a","subnet":"b"}`, `keys "Subnet" and "subnet" differ only in case`},
		{`{"PUBLICIP":"198.51.100.1"}`, `key "PUBLICIP" is not "PublicIP"`},
		{`{"publicip":"198.51.100.1"}`, `key "publicip" is not "PublicIP"`},
		{`{"data":{}}`, `key "data" is not "Data"`},
		{"{\"Subnet\":\"a\",\"\u017fubnet\":\"b\"}", "differ only in case"}, // long s folds to s
		{`{"Data":{"VNI":1,"VNI":2}}`, `duplicate key "VNI" in Data`},
		{`{"Data":{"a":[{"x":1,"X":2}]}}`, `keys "x" and "X" in Data.a[] differ only in case`},
		{`{"Extra":1,"extra":2}`, "differ only in case"}, // unknown keys too
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "nested deeper"},
		{`{"Subnet":`, "json:"},
		{`{"Subnet":"a"}]`, "after top-level value"},
	} {
		var r rec
		if err := Unmarshal([]byte(tc.in), &r); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Unmarshal(%s) = %v, want an error containing %q", tc.in, err, tc.err)
		}
	}
}

func TestUnmarshalAccepts(t *testing.T) {
	var r rec
	in := `{"Subnet":"10.0.0.0/24","PublicIP":"198.51.100.1","Data":{"a":[1,{"b":null}]},"Unknown":true,"skipped":1,"Ignored":"x"}`
	if err := Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	if r.Subnet != "10.0.0.0/24" || r.PublicIP != "198.51.100.1" || r.Ignored != "" {
		t.Errorf("decoded %+v", r)
	}
	// Not a struct: only the duplicate rule applies.
	var m map[string]any
	if err := Unmarshal([]byte(`{"a":1,"B":2}`), &m); err != nil || len(m) != 2 {
		t.Errorf("map: %v %v", m, err)
	}
	if err := Unmarshal([]byte(`{"a":1,"A":2}`), &m); err == nil {
		t.Error("map with case-variant keys accepted")
	}
	if err := Unmarshal([]byte(strings.Repeat("[", MaxDepth)+strings.Repeat("]", MaxDepth)), new(any)); err != nil {
		t.Errorf("depth %d refused: %v", MaxDepth, err)
	}
}

func TestCheckSize(t *testing.T) {
	if err := CheckSize("value", make([]byte, 10), 10); err != nil {
		t.Error(err)
	}
	if err := CheckSize("value", make([]byte, 11), 10); err == nil || !strings.Contains(err.Error(), "value is 11 bytes, over the size cap of 10 bytes") {
		t.Errorf("CheckSize: %v", err)
	}
}

// FuzzUnmarshal: whatever Unmarshal accepts, json.Unmarshal accepts too, and
// re-encoding what was decoded never yields case-variant duplicates.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"Subnet":"a","subnet":"b"}`))
	f.Add([]byte(`{"Data":{"VNI":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r rec
		if err := Unmarshal(b, &r); err != nil {
			return
		}
		var r2 rec
		if err := json.Unmarshal(b, &r2); err != nil {
			t.Fatalf("strict accepted what encoding/json refuses: %v", err)
		}
	})
}

// FuzzCheckMatchesTokenWalk: on valid JSON, the hand-written scanner refuses
// exactly what a json.Decoder token walk of the same rules refuses.
func FuzzCheckMatchesTokenWalk(f *testing.F) {
	for _, s := range []string{
		`{"Subnet":"a","subnet":"b"}`, `{"Data":{"VNI":1,"V\u004eI":2}}`, `[{"a":1},{"a":2}]`,
		`{"PUBLICIP":1}`, `{"a":[{"x":1,"X":2}]}`, `{"k":1,"\u212a":2}`, ` { "a" : [ 1 , "x\"}" ] } `,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"A":18}`,
	} {
		f.Add([]byte(s))
	}
	fields := FieldNames(&rec{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		got := Check(b, fields)
		want := tokenWalk(b, fields)
		if (got == nil) != (want == nil) {
			t.Fatalf("Check(%q) = %v, token walk = %v", b, got, want)
		}
	})
}

// tokenWalk is the rules done with json.Decoder tokens (the earlier,
// slower implementation), as a reference.
func tokenWalk(b []byte, fields []string) error {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	folded := map[string]string{}
	for _, f := range fields {
		folded[fold(f)] = f
	}
	var walk func(depth int, fields map[string]string) error
	walk = func(depth int, fields map[string]string) error {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		delim, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		if depth > MaxDepth {
			return errors.New("deep")
		}
		seen := map[string]bool{}
		for d.More() {
			if delim == '{' {
				kt, _ := d.Token()
				key, _ := kt.(string)
				if seen[fold(key)] {
					return errors.New("dup")
				}
				seen[fold(key)] = true
				if want, ok := fields[fold(key)]; ok && want != key {
					return errors.New("field")
				}
			}
			if err := walk(depth+1, nil); err != nil {
				return err
			}
		}
		_, err = d.Token()
		return err
	}
	return walk(1, folded)
}
