package upstream

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// encodeJSON writes a resource the way FHIR servers do: resourceType first,
// then elements in specification order (the same tables as the XML
// rendering), with "<" and ">" left unescaped in the narrative. Filters see
// the byte layout real servers produce rather than Go's sorted map keys.
func encodeJSON(res Resource) ([]byte, error) {
	var b bytes.Buffer
	if err := writeJSONValue(&b, "", res); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeJSONValue(b *bytes.Buffer, name string, v any) error {
	switch x := v.(type) {
	case map[string]any:
		var order []string
		if typ, ok := x["resourceType"].(string); ok {
			order = append(append([]string{"resourceType"}, resourceBase...), resourceOrder[typ]...)
		} else {
			order = orderFor(name, x)
		}
		b.WriteByte('{')
		for i, k := range orderedKeys(x, order) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, k)
			b.WriteByte(':')
			if err := writeJSONValue(b, k, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSONValue(b, name, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case string:
		writeJSONString(b, x)
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
	default:
		raw, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(raw)
	}
	return nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	b.Truncate(b.Len() - 1) // Encode appends a newline
}
