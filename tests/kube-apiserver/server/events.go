package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/registry/generic"
)

// Events, as kube-apiserver serves them: core/v1 events and events.k8s.io/v1
// events are two views of one stored collection. kube-apiserver's internal
// type of both groups is core's Event (k8s.io/kubernetes/pkg/apis/events
// registers core.Event as events.k8s.io/__internal), the events.k8s.io/v1
// store shares the core one's etcd prefix (its storage factory makes the two
// resources cohabit), and pkg/apis/events/v1/conversion.go maps the renamed
// fields. Here corev1.Event stands in for core.Event, so the same three pieces
// are: registerEventsGroup, cohabitingEvents and the conversions below; eventTable
// is its printer.

// eventsGroupResource is the events.k8s.io resource stored as core events.
var eventsGroupResource = eventsv1.SchemeGroupVersion.WithResource("events").GroupResource()

// registerEventsGroup adds events.k8s.io/v1 to s with corev1.Event as its
// internal type, the conversions between them, and the field selectors of
// both groups' events.
func registerEventsGroup(s *runtime.Scheme) error {
	if err := eventsv1.AddToScheme(s); err != nil {
		return err
	}
	internal := schema.GroupVersion{Group: eventsv1.GroupName, Version: runtime.APIVersionInternal}
	s.AddKnownTypes(internal, &corev1.Event{}, &corev1.EventList{})
	for _, err := range []error{
		s.AddConversionFunc((*eventsv1.Event)(nil), (*corev1.Event)(nil), func(a, b any, _ conversion.Scope) error {
			*b.(*corev1.Event) = coreEventFrom(a.(*eventsv1.Event))
			return nil
		}),
		s.AddConversionFunc((*corev1.Event)(nil), (*eventsv1.Event)(nil), func(a, b any, _ conversion.Scope) error {
			*b.(*eventsv1.Event) = eventsEventFrom(a.(*corev1.Event))
			return nil
		}),
		s.AddConversionFunc((*eventsv1.EventList)(nil), (*corev1.EventList)(nil), func(a, b any, _ conversion.Scope) error {
			in, out := a.(*eventsv1.EventList), b.(*corev1.EventList)
			out.ListMeta = *in.ListMeta.DeepCopy()
			out.Items = make([]corev1.Event, len(in.Items))
			for i := range in.Items {
				out.Items[i] = coreEventFrom(&in.Items[i])
			}
			return nil
		}),
		s.AddConversionFunc((*corev1.EventList)(nil), (*eventsv1.EventList)(nil), func(a, b any, _ conversion.Scope) error {
			in, out := a.(*corev1.EventList), b.(*eventsv1.EventList)
			out.ListMeta = *in.ListMeta.DeepCopy()
			out.Items = make([]eventsv1.Event, len(in.Items))
			for i := range in.Items {
				out.Items[i] = eventsEventFrom(&in.Items[i])
			}
			return nil
		}),
		s.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Event"), coreEventFieldLabel),
		s.AddFieldLabelConversionFunc(eventsv1.SchemeGroupVersion.WithKind("Event"), eventsEventFieldLabel),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// coreEventFrom is Convert_v1_Event_To_core_Event: the same fields, with
// regarding, note, deprecatedSource and deprecated{First,Last}Timestamp and
// deprecatedCount under their core/v1 names.
func coreEventFrom(in *eventsv1.Event) corev1.Event {
	in = in.DeepCopy() // the result must not share pointers with the request
	out := corev1.Event{
		ObjectMeta:          in.ObjectMeta,
		InvolvedObject:      in.Regarding,
		Reason:              in.Reason,
		Message:             in.Note,
		Source:              in.DeprecatedSource,
		FirstTimestamp:      in.DeprecatedFirstTimestamp,
		LastTimestamp:       in.DeprecatedLastTimestamp,
		Count:               in.DeprecatedCount,
		Type:                in.Type,
		EventTime:           in.EventTime,
		Action:              in.Action,
		Related:             in.Related,
		ReportingController: in.ReportingController,
		ReportingInstance:   in.ReportingInstance,
	}
	if in.Series != nil {
		out.Series = &corev1.EventSeries{Count: in.Series.Count, LastObservedTime: in.Series.LastObservedTime}
	}
	return out
}

// eventsEventFrom is Convert_core_Event_To_v1_Event, the inverse of coreEventFrom.
func eventsEventFrom(in *corev1.Event) eventsv1.Event {
	in = in.DeepCopy()
	out := eventsv1.Event{
		ObjectMeta:               in.ObjectMeta,
		Regarding:                in.InvolvedObject,
		Reason:                   in.Reason,
		Note:                     in.Message,
		DeprecatedSource:         in.Source,
		DeprecatedFirstTimestamp: in.FirstTimestamp,
		DeprecatedLastTimestamp:  in.LastTimestamp,
		DeprecatedCount:          in.Count,
		Type:                     in.Type,
		EventTime:                in.EventTime,
		Action:                   in.Action,
		Related:                  in.Related,
		ReportingController:      in.ReportingController,
		ReportingInstance:        in.ReportingInstance,
	}
	if in.Series != nil {
		out.Series = &eventsv1.EventSeries{Count: in.Series.Count, LastObservedTime: in.Series.LastObservedTime}
	}
	return out
}

// coreEventFieldLabel accepts the field selectors of core/v1 events that
// kube-apiserver accepts (pkg/apis/core/v1/conversion.go); `kubectl describe`
// finds an object's events by involvedObject.{name,namespace,kind,uid}.
func coreEventFieldLabel(label, value string) (string, string, error) {
	if _, ok := eventSelectableFields(&corev1.Event{})[label]; ok {
		return label, value, nil
	}
	return "", "", fmt.Errorf("field label not supported: %s", label)
}

// eventsFieldLabels maps the events.k8s.io/v1 field selectors to the core
// names eventSelectableFields uses (pkg/apis/events/v1/conversion.go).
var eventsFieldLabels = map[string]string{
	"reason":                    "reason",
	"regarding.kind":            "involvedObject.kind",
	"regarding.namespace":       "involvedObject.namespace",
	"regarding.name":            "involvedObject.name",
	"regarding.uid":             "involvedObject.uid",
	"regarding.apiVersion":      "involvedObject.apiVersion",
	"regarding.resourceVersion": "involvedObject.resourceVersion",
	"regarding.fieldPath":       "involvedObject.fieldPath",
	"reportingController":       "reportingComponent",
	"source":                    "source",
	"type":                      "type",
	"metadata.namespace":        "metadata.namespace",
	"metadata.name":             "metadata.name",
}

func eventsEventFieldLabel(label, value string) (string, string, error) {
	if mapped, ok := eventsFieldLabels[label]; ok {
		return mapped, value, nil
	}
	return "", "", fmt.Errorf("field label not supported: %s", label)
}

// eventSelectableFields is pkg/registry/core/event's ToSelectableFields: the
// fields a list or watch of either version can select on.
func eventSelectableFields(event *corev1.Event) fields.Set {
	source := event.Source.Component
	if source == "" {
		source = event.ReportingController
	}
	return generic.AddObjectMetaFieldsSet(fields.Set{
		"involvedObject.kind":            event.InvolvedObject.Kind,
		"involvedObject.namespace":       event.InvolvedObject.Namespace,
		"involvedObject.name":            event.InvolvedObject.Name,
		"involvedObject.uid":             string(event.InvolvedObject.UID),
		"involvedObject.apiVersion":      event.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": event.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       event.InvolvedObject.FieldPath,
		"reason":                         event.Reason,
		"reportingComponent":             event.ReportingController,
		"source":                         source,
		"type":                           event.Type,
	}, &event.ObjectMeta, true)
}

// eventAttrs is the store's AttrFunc for events (both groups store corev1.Event).
func eventAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	event, ok := obj.(*corev1.Event)
	if !ok {
		return nil, nil, fmt.Errorf("not an event: %T", obj)
	}
	return event.Labels, eventSelectableFields(event), nil
}

// cohabitingEvents gives the events.k8s.io store the storage (etcd prefix) of
// core events, so both groups read and write the same objects.
type cohabitingEvents struct {
	generic.RESTOptionsGetter
}

func (c cohabitingEvents) GetRESTOptions(resource schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	if resource == eventsGroupResource {
		resource = corev1.SchemeGroupVersion.WithResource("events").GroupResource()
	}
	return c.RESTOptionsGetter.GetRESTOptions(resource, example)
}

// eventTable prints events as kube-apiserver's event printer does
// (pkg/printers/internalversion), so `kubectl get events` shows what happened
// to which object rather than only names.
type eventTable struct{}

var eventColumns = []metav1.TableColumnDefinition{
	{Name: "Last Seen", Type: "string", Description: "Time of the last occurrence."},
	{Name: "Type", Type: "string", Description: "Normal or Warning."},
	{Name: "Reason", Type: "string", Description: "Why the action was taken."},
	{Name: "Object", Type: "string", Description: "The object the event is about (involvedObject)."},
	{Name: "Subobject", Type: "string", Priority: 1, Description: "involvedObject.fieldPath."},
	{Name: "Source", Type: "string", Priority: 1, Description: "The component (and instance) that reported it."},
	{Name: "Message", Type: "string", Description: "What happened."},
	{Name: "First Seen", Type: "string", Priority: 1, Description: "Time of the first occurrence."},
	{Name: "Count", Type: "integer", Priority: 1, Description: "Occurrences."},
	{Name: "Name", Type: "string", Priority: 1, Format: "name", Description: "The event's name."},
}

func (eventTable) ConvertToTable(_ context.Context, object runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{ColumnDefinitions: eventColumns}
	switch o := object.(type) {
	case *corev1.Event:
		table.ResourceVersion = o.ResourceVersion
		table.Rows = []metav1.TableRow{eventRow(o)}
	case *corev1.EventList:
		table.ResourceVersion, table.Continue, table.RemainingItemCount = o.ResourceVersion, o.Continue, o.RemainingItemCount
		for i := range o.Items {
			table.Rows = append(table.Rows, eventRow(&o.Items[i]))
		}
	default:
		return nil, fmt.Errorf("not an event or event list: %T", object)
	}
	return table, nil
}

// eventRow is printEvent's row: events.k8s.io events have no first/last
// timestamp or count, so eventTime and series stand in for them.
func eventRow(e *corev1.Event) metav1.TableRow {
	first := since(e.FirstTimestamp.Time)
	if e.FirstTimestamp.IsZero() {
		first = since(e.EventTime.Time)
	}
	last := since(e.LastTimestamp.Time)
	if e.LastTimestamp.IsZero() {
		last = first
	}
	count := e.Count
	if e.Series != nil {
		last, count = since(e.Series.LastObservedTime.Time), e.Series.Count
	} else if count == 0 {
		count = 1
	}
	target := strings.ToLower(e.InvolvedObject.Kind)
	if e.InvolvedObject.Name != "" {
		target += "/" + e.InvolvedObject.Name
	}
	source := firstNonEmpty(e.Source.Component, e.ReportingController)
	if instance := firstNonEmpty(e.Source.Host, e.ReportingInstance); instance != "" {
		source += ", " + instance
	}
	return metav1.TableRow{
		Cells: []any{last, e.Type, e.Reason, target, e.InvolvedObject.FieldPath, source,
			strings.TrimSpace(e.Message), first, int64(count), e.Name},
		Object: runtime.RawExtension{Object: e},
	}
}

func since(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t))
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
