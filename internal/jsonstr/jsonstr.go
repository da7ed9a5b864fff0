// Package jsonstr writes JSON string literals byte for byte as
// encoding/json does, without its reflection or allocations.
package jsonstr

import (
	"strings"
	"unicode/utf8"
)

// Append appends s as a JSON string literal exactly as encoding/json writes
// it: invalid UTF-8 becomes \ufffd, U+2028 and U+2029 are escaped, and with
// html (encoding/json's default) so are <, > and &, as \u003c, \u003e and
// \u0026. Without html it matches an Encoder after SetEscapeHTML(false).
func Append(dst []byte, s string, html bool) []byte {
	plain := &plainText
	if html {
		plain = &plainHTML
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		// Most strings are plain ASCII: skip the bytes that are copied as
		// they are with one table lookup each.
		for i < len(s) && plain[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		if b := s[i]; b < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// plainText and plainHTML mark the bytes encoding/json copies unescaped:
// ASCII 0x20 to 0x7f (DEL included) other than " and \, and, when it
// escapes HTML, other than <, > and & too. Bytes from 0x80 up start
// multi-byte runes and are looked at one rune at a time.
var plainText, plainHTML = plainTable(`"\`), plainTable(`"\<>&`)

func plainTable(escaped string) (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = !strings.ContainsRune(escaped, rune(b))
	}
	return t
}
