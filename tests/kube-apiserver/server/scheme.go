package main

import (
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
)

// Scheme and Codecs hold the built-in types this server serves. It is private
// to the front server; the apiextensions server has its own.
//
// kube-apiserver converts every request to an internal Go type (k8s.io/kubernetes/
// pkg/apis/...), which Debian does not package. Here the external k8s.io/api
// type of each kind is registered as its own internal version too: the
// apiserver's conversions to and from "__internal" then become plain copies,
// and the storage codec writes the external version to etcd.
var (
	Scheme = runtime.NewScheme()
	Codecs = serializer.NewCodecFactory(Scheme)
)

// servedGroupVersions lists the external group versions, each with one of its
// types to tell its Go package (only types of that package become internal).
// events.k8s.io has no sample: its internal type is core's Event (events.go).
var servedGroupVersions = []struct {
	addToScheme func(*runtime.Scheme) error
	gv          schema.GroupVersion
	sample      any
}{
	{corev1.AddToScheme, corev1.SchemeGroupVersion, corev1.Secret{}},
	{appsv1.AddToScheme, appsv1.SchemeGroupVersion, appsv1.Deployment{}},
	{rbacv1.AddToScheme, rbacv1.SchemeGroupVersion, rbacv1.Role{}},
	{coordinationv1.AddToScheme, coordinationv1.SchemeGroupVersion, coordinationv1.Lease{}},
	{registerEventsGroup, eventsv1.SchemeGroupVersion, nil},
	{policyv1.AddToScheme, policyv1.SchemeGroupVersion, policyv1.PodDisruptionBudget{}},
	{networkingv1.AddToScheme, networkingv1.SchemeGroupVersion, networkingv1.NetworkPolicy{}},
}

func init() {
	for _, g := range servedGroupVersions {
		utilruntime.Must(g.addToScheme(Scheme))
		if g.sample != nil {
			registerAsInternal(Scheme, g.gv, reflect.TypeOf(g.sample).PkgPath())
		}
		utilruntime.Must(Scheme.SetVersionPriority(g.gv))
	}
	addDefaultingFuncs(Scheme)
}

// registerAsInternal registers every type of package pkgPath known in gv as the
// internal version of its kind. Types from other packages (metav1 options,
// WatchEvent) already have internal forms and are left alone.
func registerAsInternal(s *runtime.Scheme, gv schema.GroupVersion, pkgPath string) {
	internal := schema.GroupVersion{Group: gv.Group, Version: runtime.APIVersionInternal}
	for kind, t := range s.KnownTypes(gv) {
		if t.PkgPath() != pkgPath {
			continue
		}
		s.AddKnownTypeWithName(internal.WithKind(kind), reflect.New(t).Interface().(runtime.Object))
	}
}

// storageCodec writes each kind to etcd in its external version, as JSON
// (events of both groups as core/v1: that is the one exact match of their Go type).
func storageCodec() runtime.Codec {
	gvs := make([]schema.GroupVersion, 0, len(servedGroupVersions))
	for _, g := range servedGroupVersions {
		gvs = append(gvs, g.gv)
	}
	return Codecs.LegacyCodec(gvs...)
}
