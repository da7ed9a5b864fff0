package filters

import (
	"encoding/hex"
	"testing"
)

// The samples published with NIST SP 800-38G (FF1 examples, csrc.nist.gov).
func TestFF1NISTSamples(t *testing.T) {
	const (
		k128 = "2B7E151628AED2A6ABF7158809CF4F3C"
		k192 = "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F"
		k256 = "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94"
		tw10 = "39383736353433323130"
		tw36 = "3737373770717273373737"
	)
	cases := []struct {
		name, key, tweak string
		radix            int
		pt, ct           string
	}{
		{"sample1 aes128 radix10 no tweak", k128, "", 10, "0123456789", "2433477484"},
		{"sample2 aes128 radix10 tweak", k128, tw10, 10, "0123456789", "6124200773"},
		{"sample3 aes128 radix36", k128, tw36, 36, "0123456789abcdefghi", "a9tv40mll9kdu509eum"},
		{"sample4 aes192 radix10 no tweak", k192, "", 10, "0123456789", "2830668132"},
		{"sample5 aes192 radix10 tweak", k192, tw10, 10, "0123456789", "2496655549"},
		{"sample6 aes192 radix36", k192, tw36, 36, "0123456789abcdefghi", "xbj3kv35jrawxv32ysr"},
		{"sample7 aes256 radix10 no tweak", k256, "", 10, "0123456789", "6657667009"},
		{"sample8 aes256 radix10 tweak", k256, tw10, 10, "0123456789", "1001623463"},
		{"sample9 aes256 radix36", k256, tw36, 36, "0123456789abcdefghi", "xs8a0azh2avyalyzuwd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, _ := hex.DecodeString(tc.key)
			tweak, _ := hex.DecodeString(tc.tweak)
			f, err := newFF1(key, tc.radix)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Encrypt(tc.pt, tweak)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.ct {
				t.Fatalf("encrypt: got %s, want %s", got, tc.ct)
			}
			back, err := f.Decrypt(got, tweak)
			if err != nil {
				t.Fatal(err)
			}
			if back != tc.pt {
				t.Fatalf("decrypt: got %s, want %s", back, tc.pt)
			}
		})
	}
}

func TestFF1RejectsSmallDomainAndForeignSymbols(t *testing.T) {
	key, _ := hex.DecodeString("2B7E151628AED2A6ABF7158809CF4F3C")
	f, err := newFF1(key, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"12345", "1", "12345a", ""} {
		if _, err := f.Encrypt(in, nil); err == nil {
			t.Errorf("Encrypt(%q): want error", in)
		}
	}
}
