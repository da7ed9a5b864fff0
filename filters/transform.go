package filters

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Masking and tokenizing preserve JSON types so that consumers which
// validate FHIR keep working:
//
//	value                  mask                          tokenize
//	date/dateTime/instant  year only ("1984")            token string
//	other string           '*' for each character        "tok:<keyid>:<32 base32 chars>" (HMAC-SHA256)
//	digits (format ff1)    -                             FF1 over the digits, separators kept
//	number                 0                             12-digit integer from the HMAC
//	boolean, null          kept                          kept
//	object, array          each member masked            each member tokenized
//
// Booleans are kept because any fixed replacement asserts something false
// (deceasedBoolean=false says alive); policies that must hide a boolean use
// remove. Inside an object, the members that say what a value is rather
// than what it holds (system, use, type, url) are kept so a masked
// identifier or telecom is still recognisable as one.
var structural = map[string]bool{"system": true, "use": true, "type": true, "url": true, "resourceType": true}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func maskNode(v *node) bool {
	v.x()
	switch v.kind {
	case kStr:
		s := v.str()
		if s == "" {
			return false
		}
		var m string
		if isDateLike(s) {
			m = s[:4]
		} else {
			m = strings.Repeat("*", utf8.RuneCountInString(s))
		}
		if m == s {
			return false
		}
		v.setStr(m)
		return true
	case kNum:
		if string(v.raw) == "0" {
			return false
		}
		v.setNum("0")
		return true
	case kObj:
		ch := false
		for i := range v.mem {
			if structural[v.mem[i].name()] {
				continue
			}
			ch = maskNode(v.mem[i].val) || ch
		}
		return ch
	case kArr:
		ch := false
		for _, e := range v.arr {
			ch = maskNode(e) || ch
		}
		return ch
	}
	return false
}

func tokenizeNode(v *node, k *tokenKey, useFF1 bool) bool {
	v.x()
	switch v.kind {
	case kStr:
		s := v.str()
		if s == "" {
			return false
		}
		v.setStr(k.token(s, useFF1))
		return true
	case kNum:
		v.setNum(k.numToken(string(v.raw)))
		return true
	case kObj:
		ch := false
		for i := range v.mem {
			if structural[v.mem[i].name()] {
				continue
			}
			ch = tokenizeNode(v.mem[i].val, k, useFF1) || ch
		}
		return ch
	case kArr:
		ch := false
		for _, e := range v.arr {
			ch = tokenizeNode(e, k, useFF1) || ch
		}
		return ch
	}
	return false
}

// mac is HMAC-SHA256 of the value alone. The element path is deliberately
// not mixed in: the same identifier must give the same token in a Patient
// and in an Observation's subject.identifier so records stay joinable.
func (k *tokenKey) mac(s string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// token returns the replacement for s. With useFF1, values made of digits
// and separators with at least six digits (a domain of 10^6, the SP 800-38G
// minimum) are encrypted digit for digit; anything else falls back to HMAC.
func (k *tokenKey) token(s string, useFF1 bool) string {
	if useFF1 {
		if t, ok := k.ff1Digits(s); ok {
			return t
		}
	}
	return "tok:" + k.id + ":" + strings.ToLower(b32.EncodeToString(k.mac(s)[:20]))
}

func (k *tokenKey) numToken(s string) string {
	n := binary.BigEndian.Uint64(k.mac(s)[:8]) % 1_000_000_000_000
	return strconv.FormatUint(n, 10)
}

func (k *tokenKey) ff1Digits(s string) (string, bool) {
	digits := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits = append(digits, c)
		case c == '-' || c == ' ' || c == '.' || c == '/':
		default:
			return "", false
		}
	}
	if len(digits) < 6 {
		return "", false
	}
	enc, err := k.ff1_10.Encrypt(string(digits), nil)
	if err != nil {
		return "", false
	}
	out := []byte(s)
	j := 0
	for i := range out {
		if out[i] >= '0' && out[i] <= '9' {
			out[i] = enc[j]
			j++
		}
	}
	return string(out), true
}

// isDateLike recognises FHIR date, dateTime and instant values with at
// least a month (a bare year is already as coarse as masking makes it).
func isDateLike(s string) bool {
	if len(s) < 7 || !digitsAt(s, 0, 4) || s[4] != '-' || !digitsAt(s, 5, 7) {
		return false
	}
	if len(s) == 7 {
		return true
	}
	if len(s) < 10 || s[7] != '-' || !digitsAt(s, 8, 10) {
		return false
	}
	return len(s) == 10 || s[10] == 'T'
}

func digitsAt(s string, from, to int) bool {
	for i := from; i < to; i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
