package codec

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Validator checks one encoded value. Build one with Func, Raw or
// JSONSchema.
type Validator interface {
	validate(key string, value []byte, c Codec) error
}

type funcValidator[T any] func(key string, v T) error

func (f funcValidator[T]) validate(key string, value []byte, c Codec) error {
	var v T
	if err := c.Unmarshal(value, &v); err != nil {
		return &DecodeError{Key: key, Codec: c.Name(), Err: err}
	}
	return f(key, v)
}

// Func is a validator in Go: the value is decoded into a T with the key's
// codec (bytes that do not decode are refused with a *DecodeError) and fn
// says whether it is acceptable.
func Func[T any](fn func(key string, v T) error) Validator { return funcValidator[T](fn) }

type rawValidator func(key string, value []byte) error

func (f rawValidator) validate(key string, value []byte, _ Codec) error { return f(key, value) }

// Raw is a validator over the encoded bytes themselves.
func Raw(fn func(key string, value []byte) error) Validator { return rawValidator(fn) }

type schemaValidator struct{ s *jsonschema.Schema }

func (v schemaValidator) validate(key string, value []byte, c Codec) error {
	doc, err := c.Generic(value)
	if err != nil {
		return &DecodeError{Key: key, Codec: c.Name(), Err: err}
	}
	if err := v.s.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return errors.New(oneLine(ve))
		}
		return err
	}
	return nil
}

// oneLine flattens a JSON Schema validation error into one line: each leaf
// cause as "at PATH: MESSAGE".
func oneLine(ve *jsonschema.ValidationError) string {
	p := message.NewPrinter(language.English)
	var leaves []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			leaves = append(leaves, fmt.Sprintf("at /%s: %s", strings.Join(e.InstanceLocation, "/"), e.ErrorKind.LocalizedString(p)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return "schema: " + strings.Join(leaves, "; ")
}

// JSONSchema compiles a JSON Schema document (draft 2020-12 unless it says
// otherwise in $schema) into a validator, with
// github.com/santhosh-tekuri/jsonschema/v6. The value is decoded with the
// key's codec first, so the same schema checks JSON and CBOR values alike.
func JSONSchema(doc []byte) (Validator, error) {
	parsed, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("codec: json schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	const loc = "peerstate:schema.json"
	if err := c.AddResource(loc, parsed); err != nil {
		return nil, fmt.Errorf("codec: json schema: %w", err)
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("codec: json schema: %w", err)
	}
	return schemaValidator{s}, nil
}
