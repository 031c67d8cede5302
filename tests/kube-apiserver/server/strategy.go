package main

import (
	"context"
	"reflect"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// typeRules is what differs between the simple built-in types; everything
// else (optimistic concurrency, finalizers, deletionTimestamp, managed fields,
// watch) is the generic registry's.
type typeRules struct {
	// validName checks metadata.name; nil means a DNS subdomain.
	validName validation.ValidateNameFunc
	// normalize rewrites a new or updated object before validation, where
	// kube-apiserver does it while converting (Secret.stringData into data).
	normalize func(obj runtime.Object)
	// validate and validateUpdate check the type's own fields; both optional.
	validate       func(obj runtime.Object) field.ErrorList
	validateUpdate func(obj, old runtime.Object) field.ErrorList
	// hasStatus: the type has .Spec and .Status, and status changes only
	// through the /status subresource (and spec only through the main one).
	hasStatus bool
	// initialStatus sets the status of a new object (Namespace: phase Active).
	initialStatus func(obj runtime.Object)
	// tracksGeneration: metadata.generation starts at 1 and counts spec changes.
	tracksGeneration bool
	// attrs gives the fields lists and watches can select on; nil: only
	// metadata.name and metadata.namespace.
	attrs storage.AttrFunc
	// table prints the type for kubectl; nil: name and age.
	table rest.TableConvertor
}

// strategy implements the create/update/delete strategies of one type.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	namespaced bool
	apiVersion fieldpath.APIVersion
	rules      typeRules
}

func newStrategy(namespaced bool, apiVersion string, rules typeRules) strategy {
	if rules.validName == nil {
		rules.validName = validation.NameIsDNSSubdomain
	}
	return strategy{Scheme, names.SimpleNameGenerator, namespaced, fieldpath.APIVersion(apiVersion), rules}
}

func (s strategy) NamespaceScoped() bool          { return s.namespaced }
func (s strategy) AllowCreateOnUpdate() bool      { return false }
func (s strategy) AllowUnconditionalUpdate() bool { return true }
func (s strategy) Canonicalize(runtime.Object)    {}

func (s strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }

func (s strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

func (s strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	if s.rules.hasStatus {
		status := structField(obj, "Status")
		status.Set(reflect.Zero(status.Type()))
		if s.rules.initialStatus != nil {
			s.rules.initialStatus(obj)
		}
	}
	if s.rules.tracksGeneration {
		mustAccessor(obj).SetGeneration(1)
	}
	if s.rules.normalize != nil {
		s.rules.normalize(obj)
	}
}

func (s strategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	if s.rules.hasStatus {
		structField(obj, "Status").Set(structField(old, "Status"))
	}
	if s.rules.tracksGeneration {
		generation := mustAccessor(old).GetGeneration()
		if !apiequality.Semantic.DeepEqual(structField(obj, "Spec").Interface(), structField(old, "Spec").Interface()) {
			generation++
		}
		mustAccessor(obj).SetGeneration(generation)
	}
	if s.rules.normalize != nil {
		s.rules.normalize(obj)
	}
}

func (s strategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	errs := validation.ValidateObjectMetaAccessor(mustAccessor(obj), s.namespaced, s.rules.validName, field.NewPath("metadata"))
	if s.rules.validate != nil {
		errs = append(errs, s.rules.validate(obj)...)
	}
	return errs
}

func (s strategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	errs := validation.ValidateObjectMetaAccessorUpdate(mustAccessor(obj), mustAccessor(old), field.NewPath("metadata"))
	if s.rules.validate != nil {
		errs = append(errs, s.rules.validate(obj)...)
	}
	if s.rules.validateUpdate != nil {
		errs = append(errs, s.rules.validateUpdate(obj, old)...)
	}
	return errs
}

// GetResetFields tells server-side apply which fields a write through this
// endpoint cannot set, so no field manager is recorded as owning them.
func (s strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.rules.hasStatus {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		s.apiVersion: fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy is the strategy of the /status subresource: it changes
// status (and metadata) and keeps the spec as stored.
type statusStrategy struct {
	strategy
}

func (s statusStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	structField(obj, "Spec").Set(structField(old, "Spec"))
}

func (s statusStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return validation.ValidateObjectMetaAccessorUpdate(mustAccessor(obj), mustAccessor(old), field.NewPath("metadata"))
}

func (s statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		s.apiVersion: fieldpath.NewSet(fieldpath.MakePathOrDie("spec")),
	}
}

// structField is the named field of the struct obj points to. The registry
// only hands us the types registered in storage.go, so a missing field is a
// programming error there, found by the first request.
func structField(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj).Elem().FieldByName(name)
	if !v.IsValid() {
		panic("type " + reflect.TypeOf(obj).String() + " has no field " + name)
	}
	return v
}

func mustAccessor(obj runtime.Object) metav1.Object {
	accessor, err := meta.Accessor(obj)
	if err != nil {
		panic(err) // every served type has ObjectMeta
	}
	return accessor
}
