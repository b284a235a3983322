package httpapi_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/qim-im/qim/httpapi"
)

// TestOpenAPIMatchesRoutes checks docs/openapi.yaml against the server: it
// lists exactly the endpoints the handler serves, and each body schema
// names exactly the fields of the protobuf message the handler maps it
// from. (The endpoint tests check every answer against it too.)
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	served := httpapi.Routes()
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Errorf("docs/openapi.yaml lists\n  %s\nthe server serves\n  %s", strings.Join(documented, "\n  "), strings.Join(served, "\n  "))
	}
	if len(doc.Components.Schemas) == 0 {
		t.Fatal("no schemas")
	}
	for name, s := range doc.Components.Schemas {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(s.Proto))
		if err != nil {
			t.Errorf("schema %s: x-proto %q: %v", name, s.Proto, err)
			continue
		}
		md, ok := d.(protoreflect.MessageDescriptor)
		if !ok {
			t.Errorf("schema %s: %s is not a message", name, s.Proto)
			continue
		}
		var fields, props []string
		for i := range md.Fields().Len() {
			fields = append(fields, string(md.Fields().Get(i).Name()))
		}
		for p := range s.Properties {
			props = append(props, p)
		}
		slices.Sort(fields)
		slices.Sort(props)
		if !slices.Equal(fields, props) {
			t.Errorf("schema %s has properties %v; %s has fields %v", name, props, s.Proto, fields)
		}
	}
}
