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
	if err := Check(b, FieldNames(v)); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Check applies Unmarshal's key rules to b, with fields the names top-level
// keys must match exactly when they match ignoring case. It does not check
// what follows the first JSON value (json.Unmarshal does).
func Check(b []byte, fields []string) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	folded := make(map[string]string, len(fields))
	for _, f := range fields {
		folded[fold(f)] = f
	}
	return walk(d, 1, folded, "")
}

// walk reads one value; fields applies to the keys of this value when it is
// an object (top level only).
func walk(d *json.Decoder, depth int, fields map[string]string, path string) error {
	tok, err := d.Token()
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth > MaxDepth {
		return fmt.Errorf("json: nested deeper than %d levels", MaxDepth)
	}
	switch delim {
	case '{':
		seen := map[string]string{}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return fmt.Errorf("json: %w", err)
			}
			key, _ := kt.(string) // object keys are strings
			f := fold(key)
			if prev, dup := seen[f]; dup {
				if prev == key {
					return fmt.Errorf("json: duplicate key %q%s", key, where(path))
				}
				return fmt.Errorf("json: keys %q and %q%s differ only in case", prev, key, where(path))
			}
			seen[f] = key
			if want, ok := fields[f]; ok && want != key {
				return fmt.Errorf("json: key %q is not %q (keys are case-sensitive)", key, want)
			}
			if err := walk(d, depth+1, nil, path+"."+key); err != nil {
				return err
			}
		}
	case '[':
		for d.More() {
			if err := walk(d, depth+1, nil, path+"[]"); err != nil {
				return err
			}
		}
	}
	if _, err := d.Token(); err != nil { // the closing delimiter
		return fmt.Errorf("json: %w", err)
	}
	return nil
}

func where(path string) string {
	if path == "" {
		return ""
	}
	return " in " + strings.TrimPrefix(path, ".")
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
