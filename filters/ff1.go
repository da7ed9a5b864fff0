package filters

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math/big"
)

// ff1 is format-preserving encryption FF1 (NIST SP 800-38G) over AES. It is
// implemented here because no maintained Go module provides it; the NIST
// sample vectors in ff1_test.go pin it down. Only the encrypt direction is
// used for tokens, decrypt exists so the tests can prove the rounds invert
// (a token is reversible by whoever holds the key, which is the point of
// choosing FF1 over HMAC).
type ff1 struct {
	block cipher.Block
	radix int
}

const ff1Digits = "0123456789abcdefghijklmnopqrstuvwxyz"

// minFF1Domain is the smallest message space SP 800-38G Rev. 1 allows;
// below it FF1 is open to enumeration, so callers fall back to HMAC.
const minFF1Domain = 1_000_000

func newFF1(key []byte, radix int) (*ff1, error) {
	if radix < 2 || radix > len(ff1Digits) {
		return nil, errorf(CodeBadConfig, "ff1: radix %d out of range", radix)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, &Error{Code: CodeBadConfig, Detail: "ff1: key", Err: err}
	}
	return &ff1{block: b, radix: radix}, nil
}

// domainOK reports whether radix^n meets the minimum domain size.
func (f *ff1) domainOK(n int) bool {
	d := 1
	for range n {
		d *= f.radix
		if d >= minFF1Domain {
			return true
		}
	}
	return false
}

func (f *ff1) Encrypt(x string, tweak []byte) (string, error) { return f.crypt(x, tweak, true) }
func (f *ff1) Decrypt(x string, tweak []byte) (string, error) { return f.crypt(x, tweak, false) }

func (f *ff1) crypt(x string, tweak []byte, enc bool) (string, error) {
	n := len(x)
	if n < 2 || !f.domainOK(n) {
		return "", errorf(CodeBadDirective, "ff1: input below the minimum domain")
	}
	for i := 0; i < n; i++ {
		if digitVal(x[i]) < 0 || digitVal(x[i]) >= f.radix {
			return "", errorf(CodeBadDirective, "ff1: input has a symbol outside radix %d", f.radix)
		}
	}
	u := n / 2
	v := n - u
	radix := big.NewInt(int64(f.radix))
	// b = ceil(ceil(v*log2(radix))/8); the bit length of radix^v-1 is
	// exactly ceil(v*log2(radix)) without floating point.
	rv := new(big.Int).Exp(radix, big.NewInt(int64(v)), nil)
	bits := new(big.Int).Sub(rv, big.NewInt(1)).BitLen()
	b := (bits + 7) / 8
	d := 4*((b+3)/4) + 4
	t := len(tweak)

	P := make([]byte, 16)
	P[0], P[1], P[2] = 1, 2, 1
	P[3], P[4], P[5] = byte(f.radix>>16), byte(f.radix>>8), byte(f.radix)
	P[6] = 10
	P[7] = byte(u % 256)
	binary.BigEndian.PutUint32(P[8:], uint32(n))
	binary.BigEndian.PutUint32(P[12:], uint32(t))

	pad := ((-t-b-1)%16 + 16) % 16
	Q := make([]byte, t+pad+1+b)
	copy(Q, tweak)

	ru := new(big.Int).Exp(radix, big.NewInt(int64(u)), nil)
	A, B := x[:u], x[u:]
	numA, numB := f.num(A), f.num(B)
	y, c := new(big.Int), new(big.Int)
	R := make([]byte, 16)
	S := make([]byte, ((d+15)/16)*16)
	tmp := make([]byte, 16)

	round := func(i int, src *big.Int) {
		Q[t+pad] = byte(i)
		src.FillBytes(Q[t+pad+1:])
		// PRF: CBC-MAC over P || Q with a zero IV.
		clear(R)
		for _, blk := range [][]byte{P} {
			xorInto(R, blk)
			f.block.Encrypt(R, R)
		}
		for off := 0; off < len(Q); off += 16 {
			xorInto(R, Q[off:off+16])
			f.block.Encrypt(R, R)
		}
		copy(S, R)
		for j := 1; j*16 < d; j++ {
			copy(tmp, R)
			binary.BigEndian.PutUint32(tmp[12:], binary.BigEndian.Uint32(tmp[12:])^uint32(j))
			f.block.Encrypt(S[j*16:], tmp)
		}
		y.SetBytes(S[:d])
	}
	mod := func(i int) *big.Int {
		if i%2 == 0 {
			return ru
		}
		return rv
	}
	if enc {
		for i := range 10 {
			round(i, numB)
			c.Add(numA, y)
			c.Mod(c, mod(i))
			numA, numB = numB, new(big.Int).Set(c)
		}
	} else {
		for i := 9; i >= 0; i-- {
			round(i, numA)
			c.Sub(numB, y)
			c.Mod(c, mod(i))
			numB, numA = numA, new(big.Int).Set(c)
		}
	}
	return f.str(numA, u) + f.str(numB, v), nil
}

func xorInto(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}

func digitVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	}
	return -1
}

func (f *ff1) num(s string) *big.Int {
	r, z := big.NewInt(int64(f.radix)), new(big.Int)
	for i := 0; i < len(s); i++ {
		z.Mul(z, r)
		z.Add(z, big.NewInt(int64(digitVal(s[i]))))
	}
	return z
}

func (f *ff1) str(z *big.Int, m int) string {
	out := make([]byte, m)
	r, q, rem := big.NewInt(int64(f.radix)), new(big.Int).Set(z), new(big.Int)
	for i := m - 1; i >= 0; i-- {
		q.DivMod(q, r, rem)
		out[i] = ff1Digits[rem.Int64()]
	}
	return string(out)
}
